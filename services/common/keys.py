"""Key building and parsing for the routing table in etcd (docs/key-schema.md), pure functions."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

ROOT = b"/overland/v1/"
PA_PREFIX = ROOT + b"pa/"
TABLE_PREFIX = ROOT + b"table/"
HOSTS_PREFIX = ROOT + b"hosts/"
VSID_INDEX_PREFIX = ROOT + b"index/vsid/"
MAC_INDEX_PREFIX = ROOT + b"index/mac/"
# Rewritten by every transaction that changes the table: its mod revision is the newest table change,
# which agents' applied revisions are measured against (host status writes also move the store revision).
TABLE_REVISION_KEY = ROOT + b"meta/table-revision"
PA_REFS_PREFIX = ROOT + b"meta/pa-refs/"


def vsid_segment(vsid: int) -> str:
    return f"{vsid:08x}"


def prefix_segment(prefix: str) -> str:
    """``192.0.2.0/24`` -> ``192.0.2.0_24`` (``/`` separates key segments)."""
    network = ipaddress.ip_network(prefix, strict=False)
    return f"{network.network_address}_{network.prefixlen}"


def parse_prefix_segment(segment: str) -> str:
    ip, _, length = segment.partition("_")
    return f"{ip}/{length}"


def pa_key(pa_ip: str) -> bytes:
    return PA_PREFIX + pa_ip.encode()


def pa_ref_key(pa_ip: str) -> bytes:
    """Touched by every write of a lookup record that uses the PA: deleting the PA compares it, so a
    record written after the delete's scan for users makes the delete scan again."""
    return PA_REFS_PREFIX + pa_ip.encode()


def domain_prefix(rdid: str) -> bytes:
    return TABLE_PREFIX + rdid.encode() + b"/"


def domain_key(rdid: str) -> bytes:
    return domain_prefix(rdid) + b"domain"


def subnet_key(rdid: str, vsid: int) -> bytes:
    return domain_prefix(rdid) + f"subnet/{vsid_segment(vsid)}".encode()


def subnets_prefix(rdid: str) -> bytes:
    return domain_prefix(rdid) + b"subnet/"


def record_key(rdid: str, vsid: int, ca: str) -> bytes:
    return domain_prefix(rdid) + f"record/{vsid_segment(vsid)}/{ca}".encode()


def records_prefix(rdid: str, vsid: int | None = None) -> bytes:
    base = domain_prefix(rdid) + b"record/"
    return base if vsid is None else base + f"{vsid_segment(vsid)}/".encode()


def route_key(rdid: str, vsid: int, destination_prefix: str, next_hop: str) -> bytes:
    segment = prefix_segment(destination_prefix)
    return domain_prefix(rdid) + f"route/{vsid_segment(vsid)}/{segment}/{next_hop}".encode()


def routes_prefix(rdid: str, vsid: int | None = None) -> bytes:
    base = domain_prefix(rdid) + b"route/"
    return base if vsid is None else base + f"{vsid_segment(vsid)}/".encode()


def vsid_index_key(vsid: int) -> bytes:
    return VSID_INDEX_PREFIX + vsid_segment(vsid).encode()


@lru_cache(maxsize=4096)
def mac_index_prefix(vsid: int) -> bytes:
    # Memoized: a bulk load builds a MAC index key per record, over few VSIDs.
    return MAC_INDEX_PREFIX + vsid_segment(vsid).encode() + b"/"


def mac_index_key(vsid: int, mac: str) -> bytes:
    return mac_index_prefix(vsid) + mac.lower().encode()


def host_key(host_name: str) -> bytes:
    return HOSTS_PREFIX + host_name.encode()


@dataclass(frozen=True)
class TableKey:
    """A parsed table key. ``kind`` is one of pa, domain, subnet, record, route, host."""

    kind: str
    rdid: str = ""
    vsid: int = 0
    ca: str = ""
    pa_ip: str = ""
    destination_prefix: str = ""
    next_hop: str = ""
    host_name: str = ""


def parse_key(key: bytes) -> TableKey | None:
    """Parse a key of the schema; ``None`` for keys outside it (index keys included)."""
    if not key.startswith(ROOT):
        return None
    parts = key[len(ROOT) :].decode(errors="replace").split("/")
    try:
        match parts:
            case ["pa", pa_ip]:
                return TableKey("pa", pa_ip=pa_ip)
            case ["hosts", host_name]:
                return TableKey("host", host_name=host_name)
            case ["table", rdid, "domain"]:
                return TableKey("domain", rdid=rdid)
            case ["table", rdid, "subnet", vsid]:
                return TableKey("subnet", rdid=rdid, vsid=int(vsid, 16))
            case ["table", rdid, "record", vsid, ca]:
                return TableKey("record", rdid=rdid, vsid=int(vsid, 16), ca=ca)
            case ["table", rdid, "route", vsid, prefix, next_hop]:
                return TableKey(
                    "route",
                    rdid=rdid,
                    vsid=int(vsid, 16),
                    destination_prefix=parse_prefix_segment(prefix),
                    next_hop=next_hop,
                )
    except ValueError:
        return None
    return None
