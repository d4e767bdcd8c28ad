"""The SDK's own decoder of google.rpc.Status, BadRequest and ErrorInfo reads bytes as the generated
classes of googleapis-common-protos do: the same fields from valid messages, and the same verdict (a
value, or malformed) on truncated, corrupted, random and hand-built wire bytes; it never raises anything
else."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from overland import _rich_status as rich
from overland.errors import STATUS_DETAILS_KEY, field_violations_from_metadata
from services.common.protowire import field_key, varint

FieldViolation = error_details_pb2.BadRequest.FieldViolation


def real_status(data: bytes) -> rich.RichStatus | None:
    try:
        status = status_pb2.Status.FromString(data)
    except DecodeError:
        return None
    return rich.RichStatus(
        status.code, status.message, tuple(rich.AnyDetail(d.type_url, d.value) for d in status.details)
    )


def our_status(data: bytes) -> rich.RichStatus | None:
    try:
        return rich.decode_status(data)
    except rich.MalformedMessage:
        return None


def real_error_infos(data: bytes) -> tuple[rich.ErrorInfo, ...] | None:
    """Every ErrorInfo detail as the generated classes read it (malformed: None)."""
    try:
        status = status_pb2.Status.FromString(data)
        found: list[rich.ErrorInfo] = []
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                found.append(rich.ErrorInfo(info.reason, info.domain, tuple(sorted(info.metadata.items()))))
        return tuple(found)
    except DecodeError:
        return None


def our_error_infos(data: bytes) -> tuple[rich.ErrorInfo, ...] | None:
    try:
        return rich.error_infos(data)
    except rich.MalformedMessage:
        return None


def real_violations(data: bytes) -> tuple[tuple[str, str], ...] | None:
    """What the SDK reported when it used the generated classes (malformed: None)."""
    try:
        status = status_pb2.Status.FromString(data)
        found: list[tuple[str, str]] = []
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                found.extend((v.field, v.description) for v in bad_request.field_violations)
        return tuple(found)
    except DecodeError:
        return None


def our_violations(data: bytes) -> tuple[tuple[str, str], ...] | None:
    try:
        return rich.bad_request_violations(data)
    except rich.MalformedMessage:
        return None


texts = st.text(max_size=20)
violations = st.builds(
    FieldViolation,
    field=texts,
    description=texts,
    reason=texts,
    localized_message=st.builds(error_details_pb2.LocalizedMessage, locale=texts, message=texts),
)


def _packed(message: Message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


details = st.one_of(
    st.builds(error_details_pb2.BadRequest, field_violations=st.lists(violations, max_size=3)).map(_packed),
    st.builds(
        error_details_pb2.ErrorInfo,
        reason=texts,
        domain=texts,
        metadata=st.dictionaries(texts, texts, max_size=3),
    ).map(_packed),
    st.builds(any_pb2.Any, type_url=texts, value=st.binary(max_size=30)),
)
# A BadRequest or ErrorInfo type URL over bytes that may not be one: a valid Status, but not a valid
# BadRequest or ErrorInfo.
hostile_details = st.builds(
    any_pb2.Any,
    type_url=st.sampled_from(
        [
            "type.googleapis.com/google.rpc.BadRequest",
            "x/google.rpc.BadRequest",
            "type.googleapis.com/google.rpc.ErrorInfo",
        ]
    ),
    value=st.binary(max_size=30),
)


def _statuses(detail: st.SearchStrategy[any_pb2.Any]) -> st.SearchStrategy[bytes]:
    return st.builds(
        status_pb2.Status,
        code=st.integers(-(2**31), 2**31 - 1),
        message=st.text(max_size=40),
        details=st.lists(detail, max_size=4),
    ).map(lambda status: status.SerializeToString())


statuses = _statuses(details)
hostile_statuses = _statuses(st.one_of(details, hostile_details))


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return field_key(number, wire_type) + payload


# Hand-built wire bytes: small field numbers (0 included) over every wire type, right and wrong, with
# nested messages and groups, so that the corner cases random bytes rarely reach come up often.
def _soup(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    numbers = st.integers(0, 5)
    fields = st.one_of(
        st.builds(_field, numbers, st.just(0), st.integers(0, 2**70).map(varint)),
        st.builds(_field, numbers, st.just(1), st.binary(min_size=7, max_size=9)),
        st.builds(_field, numbers, st.just(5), st.binary(min_size=3, max_size=5)),
        st.builds(lambda n, body: _field(n, 2, varint(len(body)) + body), numbers, children),
        st.builds(lambda n, body: _field(n, 2, varint(len(body)) + body), numbers, st.binary(max_size=8)),
        st.builds(lambda n, body: _field(n, 3, body) + _field(n, 4, b""), numbers, children),
        st.builds(_field, numbers, st.sampled_from([3, 4, 6, 7]), st.binary(max_size=3)),
    )
    return st.lists(fields, max_size=4).map(b"".join)


soups = st.recursive(st.just(b""), _soup, max_leaves=12)


@given(statuses)
def test_a_valid_status_reads_the_same(data: bytes) -> None:
    assert our_status(data) == real_status(data) is not None
    assert our_violations(data) == real_violations(data) is not None
    assert our_error_infos(data) == real_error_infos(data) is not None


@given(hostile_statuses, st.data())
def test_a_truncated_status_gets_the_same_verdict(data: bytes, draw: st.DataObject) -> None:
    cut = data[: draw.draw(st.integers(0, max(len(data) - 1, 0)))]
    assert our_status(cut) == real_status(cut)
    assert our_violations(cut) == real_violations(cut)
    assert our_error_infos(cut) == real_error_infos(cut)


@given(hostile_statuses, st.data())
def test_a_corrupted_status_gets_the_same_verdict(data: bytes, draw: st.DataObject) -> None:
    if not data:
        return
    index = draw.draw(st.integers(0, len(data) - 1))
    corrupted = data[:index] + bytes([draw.draw(st.integers(0, 255))]) + data[index + 1 :]
    assert our_status(corrupted) == real_status(corrupted)
    assert our_violations(corrupted) == real_violations(corrupted)
    assert our_error_infos(corrupted) == real_error_infos(corrupted)


@settings(max_examples=300)
@given(st.one_of(hostile_statuses, st.binary(max_size=64), soups))
@example(b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01")  # an eleven-byte varint
@example(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\x7f")  # ten bytes, bits past 64
@example(b"\x80\x80\x80\x80\x80\x01\x00")  # a six-byte key
@example(b"\x03\x04")  # field number 0
@example(b"\x0b" * 100 + b"\x0c" * 100)  # groups nested to the limit
@example(b"\x0b" * 101 + b"\x0c" * 101)  # one past it
@example(b"\x1a\x05\x0a\x03\xed\xa0\x80")  # a type URL with a UTF-16 surrogate
def test_any_bytes_get_the_same_verdict(data: bytes) -> None:
    assert our_status(data) == real_status(data)
    assert our_violations(data) == real_violations(data)
    assert our_error_infos(data) == real_error_infos(data)


@settings(max_examples=300)
@given(soups)
def test_any_bad_request_bytes_get_the_same_verdict(data: bytes) -> None:
    try:
        expected: tuple[tuple[str, str], ...] | None = tuple(
            (v.field, v.description) for v in error_details_pb2.BadRequest.FromString(data).field_violations
        )
    except DecodeError:
        expected = None
    try:
        ours: tuple[tuple[str, str], ...] | None = rich.decode_bad_request(data)
    except rich.MalformedMessage:
        ours = None
    assert ours == expected


@settings(max_examples=300)
@given(soups)
def test_any_error_info_bytes_get_the_same_verdict(data: bytes) -> None:
    try:
        info = error_details_pb2.ErrorInfo.FromString(data)
        expected: rich.ErrorInfo | None = rich.ErrorInfo(
            info.reason, info.domain, tuple(sorted(info.metadata.items()))
        )
    except DecodeError:
        expected = None
    try:
        ours: rich.ErrorInfo | None = rich.decode_error_info(data)
    except rich.MalformedMessage:
        ours = None
    assert ours == expected


@given(st.one_of(hostile_statuses, st.binary(max_size=64), soups))
def test_bad_details_keep_the_plain_status(data: bytes) -> None:
    found = field_violations_from_metadata([(STATUS_DETAILS_KEY, data)])
    assert [(v.field, v.description) for v in found] == list(real_violations(data) or ())
