"""Who a DR site believes is calling (docs/security.md): with TLS, the CN of the primary's client
certificate; without TLS, the ``x-overland-primary`` header, believed from loopback callers only (anyone
else could name any allowed primary) unless ``--insecure-primary-header`` says otherwise."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.replica.config import PRIMARY_HEADER, ReplicaConfig
from services.replica.dr.servicer import ReceiverServicer, peer_is_local
from services.replica.errors import UnauthorizedPrimary


class Context:
    """The part of ``grpc.ServicerContext`` the identity reads."""

    def __init__(self, peer: str, name: str = "primary"):
        self._peer = peer
        self._name = name

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((PRIMARY_HEADER, self._name),)


def servicer(tmp_path: Path, *, header_from_anyone: bool = False) -> ReceiverServicer:
    config = ReplicaConfig(
        site_name="dr",
        state_dir=tmp_path,
        allowed_primaries={"primary": tmp_path / "store"},
        insecure_primary_header=header_from_anyone,
    )
    return ReceiverServicer(config)


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_an_ipv4_peer_is_local_inside_127_0_0_0_8(address: ipaddress.IPv4Address, port: int) -> None:
    assert peer_is_local(f"ipv4:{address}:{port}") == address.is_loopback


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("ipv6:[::1]:5000", True),
        ("ipv6:[2001:db8::1]:5000", False),
        ("ipv6:[::ffff:127.0.0.1]:5000", True),
        ("unix:/run/overland/replica.sock", True),
        ("unix-abstract:overland", True),
        ("ipv4:198.18.0.2:5000", False),
        ("unknown", False),
        ("", False),
    ],
)
def test_peers(peer: str, local: bool) -> None:
    assert peer_is_local(peer) == local


def test_a_loopback_primary_is_named_by_its_header(tmp_path: Path) -> None:
    assert servicer(tmp_path).identity(Context("ipv4:127.0.0.1:40000")) == "primary"  # type: ignore[arg-type]


def test_a_primary_beyond_loopback_cannot_name_itself_without_tls(tmp_path: Path) -> None:
    with pytest.raises(UnauthorizedPrimary, match=r"198\.18\.0\.2") as refused:
        servicer(tmp_path).identity(Context("ipv4:198.18.0.2:40000"))  # type: ignore[arg-type]
    assert "--insecure-primary-header" in refused.value.message
    # Whatever name it gives: the refusal comes before the allow-list.
    assert "is not allowed to replicate" not in refused.value.message


def test_insecure_primary_header_believes_anyone(tmp_path: Path) -> None:
    site = servicer(tmp_path, header_from_anyone=True)
    assert site.identity(Context("ipv4:198.18.0.2:40000")) == "primary"  # type: ignore[arg-type]
    # The allow-list still holds.
    with pytest.raises(UnauthorizedPrimary, match="mallory"):
        site.identity(Context("ipv4:198.18.0.2:40000", "mallory"))  # type: ignore[arg-type]
