"""Test certificates made on the fly: a CA, a server certificate for 127.0.0.1/localhost, a client one
(issued by tools/pki.py, as operators issue theirs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.identity import Role
from tools.pki import CertificateAuthority


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A throwaway CA that signed one server and one client certificate, as PEM files in ``directory``."""
    ca = CertificateAuthority.create(directory, "overland test CA", days=1)
    server = ca.issue(
        directory, "server", "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True, days=1
    )
    client = ca.issue(
        directory, "client", "overland-cli", client=True, days=1, identity=(Role.ADMIN, "overland-cli")
    )
    assert server.cert is not None
    assert server.key is not None
    assert client.cert is not None
    assert client.key is not None
    return Pki(ca.path, server.cert, server.key, client.cert, client.key)
