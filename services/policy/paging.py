"""Page tokens of the List calls (pure).

A token is opaque to clients: base64url of ``v1:{revision}:{next key}``. It pins the store revision
of the first page, so every page of one listing reads the same snapshot (until etcd compacts it).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from overland.v1 import types_pb2
from services.policy.validation import Violations

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A token names a key of the table (short) and a revision: longer is not one of ours.
MAX_PAGE_TOKEN_LENGTH = 1024
_VERSION = b"v1"


@dataclass(frozen=True)
class PageCursor:
    """Where a page starts: the pinned revision (0: latest) and the first key to read."""

    revision: int
    start: bytes


@dataclass(frozen=True)
class Page:
    size: int
    cursor: PageCursor | None


def encode_page_token(revision: int, next_key: bytes) -> str:
    raw = _VERSION + b":" + str(revision).encode() + b":" + next_key
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page(page: types_pb2.PageRequest, prefix: bytes, field: str = "page") -> Page:
    """Validate a PageRequest for a listing of the keys under ``prefix``."""
    violations = Violations()
    size = page.page_size or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        violations.add(f"{field}.page_size", f"{page.page_size} is not a page size 1..{MAX_PAGE_SIZE}")
    cursor = None
    if len(page.page_token) > MAX_PAGE_TOKEN_LENGTH:
        violations.add(f"{field}.page_token", f"over {MAX_PAGE_TOKEN_LENGTH} characters: not a page token")
    elif page.page_token:
        cursor = _decode_token(page.page_token, prefix)
        if cursor is None:
            violations.add(
                f"{field}.page_token", "not a page token of this listing (pass next_page_token unchanged)"
            )
    violations.raise_if_any("page request")
    return Page(size, cursor)


def _decode_token(token: str, prefix: bytes) -> PageCursor | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    version, sep, rest = raw.partition(b":")
    revision, sep2, start = rest.partition(b":")
    if version != _VERSION or not sep or not sep2 or not revision.isdigit():
        return None
    if not start.startswith(prefix):
        return None
    try:
        # Every key of the table is UTF-8; a crafted token's key need not be.
        start.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return PageCursor(int(revision), start)
