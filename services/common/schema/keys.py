"""The etcd keys of the routing table (docs/key-schema.md): their builders and the one parser (pure).

Every key the services write is made by a builder here, and every key they read back is parsed by
``parse_key`` into a ``TableKey``; a schema change is made here, beside the entry codec
(``services.common.schema.entries``).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Final, Literal, NamedTuple

ROOT = b"/overland/v1/"
PA_PREFIX = ROOT + b"pa/"
TABLE_PREFIX = ROOT + b"table/"
HOSTS_PREFIX = ROOT + b"hosts/"
# Hosts' registrations (name -> PA), kept whether their agents run or not; HOSTS_PREFIX holds the
# leased status of the agents that run.
REGISTRY_PREFIX = ROOT + b"registry/hosts/"
VSID_INDEX_PREFIX = ROOT + b"index/vsid/"
MAC_INDEX_PREFIX = ROOT + b"index/mac/"
# Rewritten by every transaction that changes the table: its mod revision is the newest table change,
# which agents' applied revisions are measured against (host status writes also move the store revision).
TABLE_REVISION_KEY = ROOT + b"meta/table-revision"
# Where ``overland policy check --quarantine`` moves values the policy service cannot read: outside
# ROOT, where no agent and no listing looks.
QUARANTINE_PREFIX = b"/overland/quarantine/"
PA_REFS_PREFIX = ROOT + b"meta/pa-refs/"

KeyKind = Literal[
    "pa",
    "domain",
    "subnet",
    "record",
    "route",
    "host",
    "registration",
    "vsid-index",
    "mac-index",
    "pa-ref",
    "table-revision",
]
KIND_PA: Final = "pa"
KIND_DOMAIN: Final = "domain"
KIND_SUBNET: Final = "subnet"
KIND_RECORD: Final = "record"
KIND_ROUTE: Final = "route"
KIND_HOST: Final = "host"
KIND_REGISTRATION: Final = "registration"
KIND_VSID_INDEX: Final = "vsid-index"
KIND_MAC_INDEX: Final = "mac-index"
KIND_PA_REF: Final = "pa-ref"
KIND_TABLE_REVISION: Final = "table-revision"
# The kinds whose values are the table's resources (what agents hold); the others are the policy
# service's indexes and markers, and the agents' own status.
TABLE_KINDS: Final = (KIND_PA, KIND_DOMAIN, KIND_SUBNET, KIND_RECORD, KIND_ROUTE)


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


def registration_key(host_name: str) -> bytes:
    """A host's registration (its agent's name and PA), which outlives the agent's lease."""
    return REGISTRY_PREFIX + host_name.encode()


class TableKey(NamedTuple):
    """A parsed key. ``ident`` is the key's last identifying segment: the PA of a pa or pa-ref key,
    the CA of a record, the destination prefix of a route, the host of a host or registration key,
    the MAC of a MAC index key (the properties name it by kind)."""

    kind: KeyKind
    rdid: str = ""
    vsid: int = 0
    ident: str = ""
    next_hop: str = ""

    @property
    def pa_ip(self) -> str:
        return self.ident if self.kind in (KIND_PA, KIND_PA_REF) else ""

    @property
    def ca(self) -> str:
        return self.ident if self.kind == KIND_RECORD else ""

    @property
    def destination_prefix(self) -> str:
        return self.ident if self.kind == KIND_ROUTE else ""

    @property
    def host_name(self) -> str:
        return self.ident if self.kind in (KIND_HOST, KIND_REGISTRATION) else ""

    @property
    def mac(self) -> str:
        return self.ident if self.kind == KIND_MAC_INDEX else ""

    @property
    def in_table(self) -> bool:
        """Whether the key holds one of the table's resources (see ``TABLE_KINDS``)."""
        return self.kind in TABLE_KINDS


_ROOT_LEN = len(ROOT)
_TABLE_PREFIX_LEN = len(TABLE_PREFIX)
_PA_PREFIX_LEN = len(PA_PREFIX)


def parse_key(key: bytes) -> TableKey | None:
    """The fields of a key of the schema; ``None`` for a key outside it.

    Table keys come first and take the fewest steps: an agent's cold sync parses every key of the
    table. A segment that is not UTF-8 is decoded with replacement characters rather than refused.
    """
    try:
        if key.startswith(PA_PREFIX):
            pa_ip = key[_PA_PREFIX_LEN:]
            return TableKey(KIND_PA, ident=pa_ip.decode(errors="replace")) if b"/" not in pa_ip else None
        if key.startswith(TABLE_PREFIX):
            parts = key[_TABLE_PREFIX_LEN:].decode(errors="replace").split("/")
            count = len(parts)
            if count < 2:
                return None
            kind = parts[1]
            if kind == "record" and count == 4:
                return TableKey(KIND_RECORD, parts[0], int(parts[2], 16), parts[3])
            if kind == "domain" and count == 2:
                return TableKey(KIND_DOMAIN, parts[0])
            if kind == "subnet" and count == 3:
                return TableKey(KIND_SUBNET, parts[0], int(parts[2], 16))
            if kind == "route" and count == 5:
                return TableKey(
                    KIND_ROUTE, parts[0], int(parts[2], 16), parse_prefix_segment(parts[3]), parts[4]
                )
            return None
        if not key.startswith(ROOT):
            return None
        return _parse_other(key[_ROOT_LEN:].decode(errors="replace").split("/"))
    except ValueError:
        return None


def _parse_other(parts: list[str]) -> TableKey | None:
    """The keys outside the table: hosts, indexes and markers (``int`` may raise ValueError)."""
    match parts:
        case ["hosts", host_name]:
            return TableKey(KIND_HOST, ident=host_name)
        case ["registry", "hosts", host_name]:
            return TableKey(KIND_REGISTRATION, ident=host_name)
        case ["index", "vsid", vsid]:
            return TableKey(KIND_VSID_INDEX, vsid=int(vsid, 16))
        case ["index", "mac", vsid, mac]:
            return TableKey(KIND_MAC_INDEX, vsid=int(vsid, 16), ident=mac)
        case ["meta", "pa-refs", pa_ip]:
            return TableKey(KIND_PA_REF, ident=pa_ip)
        case ["meta", "table-revision"]:
            return TableKey(KIND_TABLE_REVISION)
    return None


def domain_of(position: bytes) -> str | None:
    """The routing domain of a table key, or of any position between table keys (a listing's page
    cursor, a domain's prefix); ``None`` outside the table's domains, or when the domain segment is
    not UTF-8 (no key of the table is: such a position was made up)."""
    if not position.startswith(TABLE_PREFIX):
        return None
    rdid, sep, _rest = position[_TABLE_PREFIX_LEN:].partition(b"/")
    try:
        return rdid.decode() if sep else None
    except UnicodeDecodeError:
        return None
