"""The gRPC rich error model read from bytes: google.rpc.Status, its google.protobuf.Any details, the
field violations of google.rpc.BadRequest and google.rpc.ErrorInfo (pure).

A server sends a failed call's serialized ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer. Reading it with generated classes would make grpcio-status and googleapis-common-protos
dependencies of every program that uses the SDK, for a handful of fields; this module reads those
fields the way protobuf's own parser does, and is property-tested against the generated classes
(tests/unit/sdk/test_rich_status.py):

- unknown fields are skipped, whatever their wire type (groups included), and so is a known field that
  arrives with another wire type than its declared one;
- the last value of a singular field wins; every occurrence of a repeated field adds an element; a map
  entry replaces an earlier one of the same key;
- strings must be UTF-8; a truncated varint or length, a wire type of 6 or 7, a field number of 0
  (except inside a group), an unbalanced group or nesting deeper than protobuf's limit make the whole
  message malformed, as ``MalformedMessage``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)
# Protobuf's default nesting limit: messages (and groups) inside the one parsed, counted from it.
MAX_DEPTH = 100
_UINT64 = (1 << 64) - 1
_UINT32 = (1 << 32) - 1
# A field key is a varint of at most five bytes.
_KEY_BYTES = 5
_FIXED_BYTES = {I64: 8, I32: 4}

BAD_REQUEST = "google.rpc.BadRequest"
ERROR_INFO = "google.rpc.ErrorInfo"


class MalformedMessage(ValueError):
    """The bytes are not a valid serialization of the message they were read as."""


@dataclass(frozen=True)
class AnyDetail:
    """A google.protobuf.Any: a message of the type ``type_url`` names, serialized in ``value``."""

    type_url: str = ""
    value: bytes = b""

    def is_type(self, full_name: str) -> bool:
        """Whether this holds a ``full_name`` message, as ``Any.Is`` decides (the name after the last
        ``/`` of the URL, which must have one)."""
        return "/" in self.type_url and self.type_url.rpartition("/")[2] == full_name


@dataclass(frozen=True)
class RichStatus:
    """A google.rpc.Status: a status code number, a message and details of any type."""

    code: int = 0
    message: str = ""
    details: tuple[AnyDetail, ...] = ()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` (at most ten bytes, wrapped to 64 bits) and the position after it."""
    value = 0
    for index, byte in enumerate(data[pos : pos + 10]):
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value & _UINT64, pos + index + 1
    raise MalformedMessage("truncated or overlong varint")


def _key(data: bytes, pos: int) -> tuple[int, int, int]:
    """The field number and wire type of the key at ``pos``, and the position after it."""
    key, end = _varint(data, pos)
    if end - pos > _KEY_BYTES or key > _UINT32:
        raise MalformedMessage("field key out of range")
    return key >> 3, key & 7, end


def _value(data: bytes, pos: int, wire_type: int) -> tuple[int | bytes, int]:
    """A field's value (an int, or the bytes of a length-delimited one) and the position after it."""
    if wire_type == VARINT:
        return _varint(data, pos)
    if wire_type == LEN:
        size, pos = _varint(data, pos)
        if size > len(data) - pos:
            raise MalformedMessage("length past the end")
        return data[pos : pos + size], pos + size
    if wire_type in _FIXED_BYTES:
        end = pos + _FIXED_BYTES[wire_type]
        if end > len(data):
            raise MalformedMessage("truncated fixed-width value")
        return int.from_bytes(data[pos:end], "little"), end
    raise MalformedMessage(f"wire type {wire_type}")


def _skip_group(data: bytes, pos: int, number: int, depth: int) -> int:
    """The position after the group ``number`` whose start key ends at ``pos``. Iterative, so that
    nesting is bounded by ``depth`` and never by Python's stack."""
    open_groups = [number]
    while open_groups:
        if len(open_groups) > depth:
            raise MalformedMessage("nested too deep")
        if pos >= len(data):
            raise MalformedMessage("unterminated group")
        inner, wire_type, pos = _key(data, pos)
        if wire_type == SGROUP:
            open_groups.append(inner)
        elif wire_type == EGROUP:
            if open_groups.pop() != inner:
                raise MalformedMessage("mismatched end of group")
        else:
            _, pos = _value(data, pos, wire_type)
    return pos


def _fields(data: bytes, depth: int) -> Iterator[tuple[int, int, int | bytes]]:
    """Each field of a message as (number, wire type, value), in order; a group is skipped whole and
    yields ``(number, SGROUP, b"")``. ``depth`` is how many more levels of nesting the message may hold."""
    pos = 0
    while pos < len(data):
        number, wire_type, pos = _key(data, pos)
        # Only a message's own fields must not be 0: protobuf lets a skipped group hold field 0.
        if number == 0:
            raise MalformedMessage("field number 0")
        if wire_type == EGROUP:
            raise MalformedMessage("end of a group that was never started")
        if wire_type == SGROUP:
            pos = _skip_group(data, pos, number, depth)
            yield number, SGROUP, b""
            continue
        value, pos = _value(data, pos, wire_type)
        yield number, wire_type, value


def _text(value: int | bytes) -> str:
    assert isinstance(value, bytes)  # a LEN field, by the caller's wire-type check
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("a string is not UTF-8") from None


def _int32(value: int | bytes) -> int:
    assert isinstance(value, int)  # a VARINT field, by the caller's wire-type check
    value &= _UINT32
    return value - (1 << 32) if value >> 31 else value


def _nested(value: int | bytes, depth: int) -> tuple[bytes, int]:
    """A length-delimited submessage's bytes and the depth left inside it."""
    assert isinstance(value, bytes)  # a LEN field, by the caller's wire-type check
    if depth < 1:
        raise MalformedMessage("nested too deep")
    return value, depth - 1


def decode_any(data: bytes, depth: int = MAX_DEPTH) -> AnyDetail:
    """A google.protobuf.Any: type_url = 1 (string), value = 2 (bytes)."""
    type_url, value = "", b""
    for number, wire_type, field in _fields(data, depth):
        if wire_type != LEN:
            continue
        if number == 1:
            type_url = _text(field)
        elif number == 2:
            assert isinstance(field, bytes)  # LEN, checked above
            value = field
    return AnyDetail(type_url, value)


def decode_status(data: bytes) -> RichStatus:
    """A google.rpc.Status: code = 1 (int32), message = 2 (string), details = 3 (repeated Any)."""
    code, message, details = 0, "", []
    for number, wire_type, value in _fields(data, MAX_DEPTH):
        if number == 1 and wire_type == VARINT:
            code = _int32(value)
        elif number == 2 and wire_type == LEN:
            message = _text(value)
        elif number == 3 and wire_type == LEN:
            details.append(decode_any(*_nested(value, MAX_DEPTH)))
    return RichStatus(code, message, tuple(details))


def _check_localized_message(data: bytes, depth: int) -> None:
    """A google.rpc.LocalizedMessage (locale = 1, message = 2, both strings): only checked, as
    protobuf's parser checks it, since the SDK does not report it."""
    for number, wire_type, value in _fields(data, depth):
        if number in (1, 2) and wire_type == LEN:
            _text(value)


def _decode_field_violation(data: bytes, depth: int) -> tuple[str, str]:
    """A google.rpc.BadRequest.FieldViolation: field = 1 and description = 2 (strings) are reported;
    reason = 3 (string) and localized_message = 4 are checked."""
    field, description = "", ""
    for number, wire_type, value in _fields(data, depth):
        if wire_type != LEN:
            continue
        if number == 1:
            field = _text(value)
        elif number == 2:
            description = _text(value)
        elif number == 3:
            _text(value)
        elif number == 4:
            _check_localized_message(*_nested(value, depth))
    return field, description


def decode_bad_request(data: bytes) -> tuple[tuple[str, str], ...]:
    """A google.rpc.BadRequest's field violations (field_violations = 1), as (field, description)."""
    return tuple(
        _decode_field_violation(*_nested(value, MAX_DEPTH))
        for number, wire_type, value in _fields(data, MAX_DEPTH)
        if number == 1 and wire_type == LEN
    )


def bad_request_violations(status_bytes: bytes) -> tuple[tuple[str, str], ...]:
    """Every field violation of every BadRequest detail of a serialized google.rpc.Status."""
    status = decode_status(status_bytes)
    return tuple(
        violation
        for detail in status.details
        if detail.is_type(BAD_REQUEST)
        for violation in decode_bad_request(detail.value)
    )


@dataclass(frozen=True)
class ErrorInfo:
    """A google.rpc.ErrorInfo: why a call failed, for clients that act on it by machine."""

    reason: str = ""
    domain: str = ""
    metadata: tuple[tuple[str, str], ...] = ()


def _decode_map_entry(data: bytes, depth: int) -> tuple[str, str] | None:
    """One entry of a ``map<string, string>``: key = 1, value = 2 (missing: empty). An entry with any
    other field (or one of these with another wire type) is dropped, as protobuf does: None."""
    key, value, dropped = "", "", False
    for number, wire_type, field in _fields(data, depth):
        if wire_type == LEN and number == 1:
            key = _text(field)
        elif wire_type == LEN and number == 2:
            value = _text(field)
        else:
            dropped = True
    return None if dropped else (key, value)


def decode_error_info(data: bytes) -> ErrorInfo:
    """A google.rpc.ErrorInfo: reason = 1, domain = 2 (strings), metadata = 3 (a map of strings, whose
    later entries replace earlier ones of the same key); the metadata in key order."""
    reason, domain, metadata = "", "", {}
    for number, wire_type, value in _fields(data, MAX_DEPTH):
        if wire_type != LEN:
            continue
        if number == 1:
            reason = _text(value)
        elif number == 2:
            domain = _text(value)
        elif number == 3:
            entry = _decode_map_entry(*_nested(value, MAX_DEPTH))
            if entry is not None:
                metadata[entry[0]] = entry[1]
    return ErrorInfo(reason, domain, tuple(sorted(metadata.items())))


def error_infos(status_bytes: bytes) -> tuple[ErrorInfo, ...]:
    """Every ErrorInfo detail of a serialized google.rpc.Status."""
    status = decode_status(status_bytes)
    return tuple(decode_error_info(detail.value) for detail in status.details if detail.is_type(ERROR_INFO))
