"""Hostile strings in every string field of every policy RPC, through a real server (port 0, MemoryKV):
megabytes, control characters, bytes that are not UTF-8. Whatever arrives, the answer is a status of
bounded size, never INTERNAL, and an INVALID_ARGUMENT names the bad field."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from overland.defaults import MAX_REQUEST_BYTES
from overland.v1 import policy_pb2
from services.common.config import ServerConfig
from services.common.memory_kv import MemoryKV
from services.policy import PolicyConfig, create_server

from .support import violations_of

SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"]
METHODS = list(SERVICE.methods)
# A placeholder the serialized request's bytes swap for bytes that are not UTF-8, of the same length.
NOT_UTF8_MARK = "@@not-utf8@@"
NOT_UTF8_BYTES = b"\xff\xfe\xc0\x80\xed\xa0\x80" + b"@" * (len(NOT_UTF8_MARK) - 7)
# What the status of any answer may take: gRPC clients refuse trailers past 8 KiB.
MAX_STATUS_BYTES = 6 * 1024
VALID_LOOKING = [
    "192.0.2.10",
    "192.0.2.0/24",
    "198.18.0.1",
    "02:00:00:00:00:01",
    "6f1c1d1e-0000-4000-8000-000000000001",
    "host-1",
    "Contoso",
    "",
]


def hostile_strings() -> st.SearchStrategy[str]:
    # Sizes around the limits: a name's, an address's, a page token's, megabytes, past the 4 MiB
    # a server accepts.
    sizes = st.sampled_from([65, 257, 1025, 70_000, 1_500_000, 5_000_000])
    big = st.tuples(st.sampled_from(["a", "\x00", "é", "1.", "/", "\u202e"]), sizes).map(
        lambda t: t[0] * (t[1] // len(t[0].encode()))
    )
    return st.one_of(
        st.sampled_from(VALID_LOOKING),
        st.text(max_size=40),
        st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),
        st.just(NOT_UTF8_MARK),
        big,
        big,
    )


@st.composite
def requests(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> dict[str, Any]:
    """Field values for a message: every string hostile, numbers anywhere in their type's range."""
    values: dict[str, Any] = {}
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        count = draw(st.integers(0, 2)) if field.is_repeated else 1
        drawn = [draw(_value(field, depth)) for _ in range(count)]
        values[field.name] = drawn if field.is_repeated else drawn[0]
    return values


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == field.TYPE_STRING:
        return hostile_strings()
    if field.type == field.TYPE_MESSAGE:
        nested = field.message_type
        return requests(nested, depth + 1) if depth < 2 and nested is not None else st.just({})
    if field.type == field.TYPE_BOOL:
        return st.booleans()
    if field.type == field.TYPE_ENUM:
        return st.integers(-1, 5)
    if field.type in (field.TYPE_UINT32, field.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if field.type in (field.TYPE_INT32, field.TYPE_SINT32):
        return st.integers(-(2**31), 2**31 - 1)
    return st.integers(-(2**63), 2**63 - 1)


def _fill(message: Message, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.type == field.TYPE_MESSAGE:
            if field.is_repeated:
                for item in value:
                    _fill(getattr(message, name).add(), item)
            else:
                _fill(getattr(message, name), value)
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server, port = create_server(PolicyConfig(server=ServerConfig(bind="127.0.0.1:0")), kv=MemoryKV())
    options = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as opened:
        yield opened
    server.stop()


def _call(channel: grpc.Channel, method: Any, body: bytes) -> None:
    """Send ``body`` as the request of ``method``; return on success, raise grpc.RpcError otherwise."""
    path = f"/{SERVICE.full_name}/{method.name}"
    raw = {"request_serializer": None, "response_deserializer": None}
    if method.client_streaming:
        channel.stream_unary(path, **raw)(iter([body, body]), timeout=30)
    elif method.server_streaming:
        stream = channel.unary_stream(path, **raw)(body, timeout=30)
        # A valid watch streams until cancelled: its first answer (or its error) is the test.
        for _ in stream:
            break
        stream.cancel()
    else:
        channel.unary_unary(path, **raw)(body, timeout=30)


def _names_a_field(error: grpc.RpcError, method: str) -> None:
    assert violations_of(error), f"{method}: no field named: {(error.details() or '')[:300]}"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(st.sampled_from(METHODS).flatmap(lambda m: st.tuples(st.just(m), requests(m.input_type))))
def test_every_answer_to_hostile_strings_is_a_bounded_status(
    channel: grpc.Channel, drawn: tuple[Any, dict[str, Any]]
) -> None:
    method, values = drawn
    request = (
        policy_pb2.__dict__[method.input_type.name]()
        if method.input_type.name in policy_pb2.__dict__
        else None
    )
    assert request is not None, method.input_type.full_name
    _fill(request, values)
    body = request.SerializeToString().replace(NOT_UTF8_MARK.encode(), NOT_UTF8_BYTES)
    event(f"{len(body) // 1_000_000} MB" if len(body) > 1_000_000 else "small")
    event("not UTF-8" if NOT_UTF8_BYTES in body else "UTF-8")
    try:
        _call(channel, method, body)
    except grpc.RpcError as error:
        code = error.code()
        event(code.name)
        if code == grpc.StatusCode.CANCELLED:
            return
        details = error.details() or ""
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            f"{method.name}: {details[:300]}"
        )
        # grpc hands trailers as (key, value) tuples (its stubs say _Metadatum).
        trailers = cast(Sequence[tuple[str, str | bytes]], error.trailing_metadata() or ())
        size = len(details.encode()) + sum(len(key) + len(value) for key, value in trailers)
        assert size <= MAX_STATUS_BYTES
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert len(body) > MAX_REQUEST_BYTES or method.client_streaming
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            _names_a_field(error, method.name)
