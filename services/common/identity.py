"""Who is calling a service: the identity its client certificate names (docs/security.md, "Roles").

An identity is a role and a name. A certificate carries it as one URI subject alternative name,
``overland://ROLE/NAME``, the name percent-encoded (``overland://tenant/Contoso%20Ltd``):

- ``admin``: an operator; the name is for the logs.
- ``tenant``: the tenant of that name (``RoutingDomain.tenant_name``).
- ``host``: the vswitch agent of that host.
- ``site``: a replica site (a primary, as the DR site's allow-list names it).

A URI rather than the subject's CN or OU: a SAN URI is matched exactly (no subject-string parsing), a
certificate may carry DNS names and addresses beside it (a site's server certificate doubles as its
client certificate), and gRPC hands URI SANs to the server as they are (``peer_uri``).

Parsing and formatting are pure (``parse_identity_uri``, ``identity_uri``); ``identity_of`` reads a
call's identity from its gRPC auth context, which the TLS layer filled from a verified certificate.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

SCHEME = "overland"
_PREFIX = f"{SCHEME}://"
# A tenant's name is at most 256 characters (RoutingDomain.tenant_name); the others are shorter.
MAX_NAME_CHARS = 256


class Role(enum.Enum):
    """What an identity may do, per service (each service's access rules)."""

    ADMIN = "admin"
    TENANT = "tenant"
    HOST = "host"
    SITE = "site"


@dataclass(frozen=True)
class Identity:
    """A caller. ``role`` None: the certificate names no Overland identity (``name`` then says what
    it does name, for the message), or the caller brought no certificate to a TLS server.

    ``local``: the server verifies no client certificates, so it knows nothing of its callers; each
    is treated as an admin (docs/security.md: without TLS it listens on loopback only)."""

    role: Role | None
    name: str
    local: bool = False

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def __str__(self) -> str:
        if self.local:
            return "a caller the server knows nothing of (it verifies no client certificates)"
        if self.role is None:
            return f"a caller without an Overland identity ({self.name})"
        return f"{self.role.value} {self.name!r}"


LOCAL = Identity(Role.ADMIN, "local", local=True)
ANONYMOUS = Identity(None, "no client certificate")


def identity_uri(role: Role, name: str) -> str:
    """The URI SAN a certificate of ``role`` and ``name`` carries."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    return f"{_PREFIX}{role.value}/{quote(name, safe='')}"


def name_problem(name: str) -> str:
    """What is wrong with an identity's name, or "" when it is one."""
    if not name:
        return "an identity needs a name"
    if len(name) > MAX_NAME_CHARS:
        return f"an identity's name is at most {MAX_NAME_CHARS} characters"
    if not name.isprintable():
        return "an identity's name is printable characters only"
    return ""


def parse_identity_uri(uri: str) -> tuple[Role, str] | None:
    """The role and name of an ``overland://ROLE/NAME`` URI; None for any other URI, or one whose
    role is unknown or whose name is empty, too long, not printable or not percent-encoded UTF-8."""
    if not uri.startswith(_PREFIX):
        return None
    role_text, slash, encoded = uri[len(_PREFIX) :].partition("/")
    if not slash or "/" in encoded or "?" in encoded or "#" in encoded:
        return None
    try:
        role = Role(role_text)
        name = unquote(encoded, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return None
    return None if name_problem(name) else (role, name)


@lru_cache(maxsize=4096)
def identity_from(uris: tuple[bytes, ...], subject: bytes) -> Identity:
    """The identity of a verified certificate from its URI SANs and its subject (only quoted when it
    names no identity). Exactly one ``overland://`` URI must name it: two are ambiguous."""
    found = []
    others = 0
    for raw in uris:
        text = raw.decode("utf-8", "replace")
        if text.startswith(_PREFIX):
            parsed = parse_identity_uri(text)
            if parsed is None:
                others += 1
            else:
                found.append(parsed)
    if len(found) == 1 and not others:
        role, name = found[0]
        return Identity(role, name)
    what = subject.decode("utf-8", "replace") or "no subject"
    if len(found) + others > 1:
        return Identity(None, f"certificate {what} with {len(found) + others} {_PREFIX} URIs, not one")
    if others:
        return Identity(None, f"certificate {what} with a malformed {_PREFIX} URI")
    return Identity(None, f"certificate {what} with no {_PREFIX}ROLE/NAME URI")


def identity_of(auth_context: Mapping[str, Sequence[bytes]] | Any) -> Identity:
    """The caller's identity from a call's gRPC auth context on a TLS server."""
    uris = tuple(auth_context.get("peer_uri", ()))
    subjects = auth_context.get("x509_subject", ())
    if not uris and not subjects:
        return ANONYMOUS
    return identity_from(uris, subjects[0] if subjects else b"")
