"""External-media transfer files: a delta stream written to a file at the primary and read at the DR site.

The file is the same ``DeltaMessage`` stream the network carries, each message prefixed with its
length (4 bytes, big-endian), after a magic line; importing it runs the receiver's normal staging and
commit, so checksums, atomicity and resume behave as over the network.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from google.protobuf.message import DecodeError

from overland.defaults import MAX_MESSAGE_BYTES
from overland.v1 import replica_pb2
from services.replica.codec.wire import Received, parse_message, serialize
from services.replica.errors import MalformedDelta
from services.replica.files import replacing

MAGIC = b"OVERLAND-REPLICA-EXPORT 1\n"
_LENGTH = struct.Struct(">I")


def write_export(path: Path, messages: Iterable[replica_pb2.DeltaMessage | bytes]) -> int:
    """Write the stream to ``path`` (atomically: a crash or an error leaves no partial file under the
    name); return its size."""
    with replacing(path) as file:
        file.write(MAGIC)
        for message in messages:
            data = serialize(message)
            file.write(_LENGTH.pack(len(data)))
            file.write(data)
        return file.tell()


def read_export(path: Path) -> Iterator[Received]:
    """The messages of an export file; a truncated or foreign file raises ``MalformedDelta``."""
    with path.open("rb") as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise MalformedDelta(f"{path} is not an Overland replica export")
        while True:
            head = file.read(_LENGTH.size)
            if not head:
                return
            if len(head) < _LENGTH.size:
                raise MalformedDelta(f"{path} is truncated")
            (length,) = _LENGTH.unpack(head)
            if length > MAX_MESSAGE_BYTES:
                raise MalformedDelta(f"{path} holds a message of {length} bytes, over {MAX_MESSAGE_BYTES}")
            data = file.read(length)
            if len(data) < length:
                raise MalformedDelta(f"{path} is truncated")
            try:
                yield parse_message(data)
            except DecodeError:
                raise MalformedDelta(f"{path} holds an undecodable message") from None
