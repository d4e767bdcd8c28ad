"""Requests that protobuf refuses to parse become INVALID_ARGUMENT naming the field, not INTERNAL.

gRPC answers a request its deserializer cannot parse with INTERNAL ("Exception deserializing
request!"), as if the server were at fault. The commonest such request is well formed but for a
string field that is not UTF-8 (the wire allows any bytes; proto3 strings do not). ``tolerant`` wraps
a method's deserializer so that such a request arrives as an ``Undecodable``, and ``decoded`` wraps
its behaviour so that one raises ``InvalidArgument`` naming the field, which the error mapping turns
into a status like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError

from services.common.errors import FieldViolation, InvalidArgument
from services.common.protowire import undecodable_string


class Undecodable:
    """A request protobuf refused, with the error to answer it with."""

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def _refusal(deserializer: Callable[[bytes], Any], data: bytes, error: DecodeError) -> InvalidArgument:
    kind = getattr(deserializer, "__self__", None)
    descriptor: Descriptor | None = getattr(kind, "DESCRIPTOR", None)
    field = undecodable_string(descriptor, data) if descriptor is not None else None
    if field is not None:
        return InvalidArgument(
            f"the request's {field} is not UTF-8", [FieldViolation(field, "not UTF-8 (a string must be)")]
        )
    return InvalidArgument(
        f"the request is not a valid {getattr(descriptor, 'full_name', 'message')}: {error}"
    )


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, answering an ``Undecodable`` where it would raise ``DecodeError``."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return Undecodable(_refusal(deserializer, data, error))

    return parse


def _checked(request: Any) -> Any:
    if isinstance(request, Undecodable):
        raise request.error
    return request


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _checked(request)


def decoded(behavior: Callable[..., Any], *, streaming: bool) -> Callable[..., Any]:
    """``behavior`` (a unary or a request-streaming method) raising an ``Undecodable``'s error
    instead of seeing it."""
    if streaming:
        return lambda requests, context: behavior(_checked_stream(requests), context)
    return lambda request, context: behavior(_checked(request), context)
