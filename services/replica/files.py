"""Durable file updates, for both sites: replace a file whole, and make a rename survive a crash.

A file is replaced by writing a temporary next to it, fsyncing it, renaming it over the old one and
fsyncing the directory (the rename is only durable once the directory is). A crash at any point
leaves either the old or the new content under the name, never a mix and never nothing.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (files created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` (replacing it) and make the rename durable."""
    source.replace(target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A new file to write that replaces ``path`` whole when the block ends without an error.

    Until then ``path`` keeps its old content; on an error the temporary is removed and ``path`` is
    untouched. ``mode`` is the new file's permission bits (before the umask).
    """
    # A unique name, so concurrent writers of the same file cannot rename each other's temporary away.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        move(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new content."""
    with replacing(path) as file:
        file.write(data)
