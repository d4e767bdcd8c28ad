"""``overland policy``: the routing table, with commands after the HNV cmdlets of Windows Server 2012.

``routing-domain``, ``subnet``, ``provider-address``, ``lookup-record`` and ``route`` each have
``add|get|list|update|remove``; ``lookup-record move`` moves a VM's records to another host, and
``host get|list`` shows the hosts' registered PAs. ``update`` reads the resource, changes the options
given and writes it back guarded by the revision it read, so a concurrent change makes it fail
(ABORTED) instead of being overwritten.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from overland.cli.common import (
    read_text_file,
    service_group,
    settings,
    show,
    show_json_line,
    show_list,
    show_mapping,
    show_sections,
)
from overland.cli.params import (
    INT64_MAX,
    UINT32_MAX,
    ipv4,
    mac,
    prefix,
    seconds,
)
from overland.cli.resources import Commands, LazyGroup, Opt, Resource, ResourceGroups
from overland.client import PolicyClient
from overland.defaults import MAX_VSID, MIN_VSID
from overland.records import RecordFormat, enum_value, guess_format, parse_records, short_enum_name
from overland.v1 import policy_pb2, types_pb2
from overland.v1.types_pb2 import LookupRule, LookupType


class Rule(enum.StrEnum):
    encap = "encap"
    none = "none"


class RecordType(enum.StrEnum):
    static = "static"
    l2_only = "l2-only"
    gateway_wildcard = "gateway-wildcard"


class FileFormat(enum.StrEnum):
    auto = "auto"
    jsonl = "jsonl"
    csv = "csv"


Vsid = Annotated[
    int,
    typer.Option("--vsid", help=f"Virtual subnet ID, {MIN_VSID}..{MAX_VSID}.", min=MIN_VSID, max=MAX_VSID),
]
Ca = Annotated[str, typer.Option("--ca", help="Customer address (IPv4).", parser=ipv4)]
Rdid = Annotated[str, typer.Option("--rdid", help="Routing domain ID.")]
Prefix = Annotated[str, typer.Option("--prefix", help="Destination prefix, CIDR.", parser=prefix)]
NextHop = Annotated[
    str, typer.Option("--next-hop", help="Next hop IPv4; 0.0.0.0 means on-link.", parser=ipv4)
]
OnlyRdid = Annotated[str, typer.Option(help="Only this routing domain.")]
OnlyVsid = Annotated[int, typer.Option(help="Only this virtual subnet.", min=0, max=MAX_VSID)]
Mac = Annotated[str, typer.Option(help="The VM NIC's MAC, aa:bb:cc:dd:ee:ff.", parser=mac)]
OptionalIp = Annotated[str | None, typer.Option(parser=ipv4)]
OptionalMac = Annotated[str | None, typer.Option(parser=mac)]


def _client(ctx: typer.Context) -> PolicyClient:
    return settings(ctx).client(PolicyClient)


def _rule(rule: Rule) -> str:
    return enum_value(rule.value, LookupRule, "LOOKUP_RULE_")


def _type(record_type: RecordType) -> str:
    return enum_value(record_type.value, LookupType, "LOOKUP_TYPE_")


def _nonempty(values: list[str]) -> list[str] | None:
    return values or None


_ROUTE_KEYS = (
    Opt("rdid", Rdid),
    Opt("vsid", Vsid),
    Opt("prefix", Prefix, field="destination_prefix"),
    Opt("next_hop", NextHop),
)
_RECORD_KEYS = (Opt("vsid", Vsid), Opt("ca", Ca))


def parse_move(text: str) -> policy_pb2.RecordMove:
    """``VSID:CA`` or ``VSID:CA=NEW_CA``, one record of a move; typer.BadParameter when malformed."""
    source, _, new_ca = text.partition("=")
    vsid, separator, ca = source.partition(":")
    number = vsid.strip()
    # ASCII digits only (int() refuses some that isdigit() accepts), and within the proto's uint32.
    if (
        not separator
        or not (number.isascii() and number.isdigit())
        or int(number) > UINT32_MAX
        or not ca.strip()
    ):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise typer.BadParameter(f"{shown!r} is not VSID:CA or VSID:CA=NEW_CA")
    return policy_pb2.RecordMove(vsid=int(number), ca=ca.strip(), new_ca=new_ca.strip())


def move_records(
    ctx: typer.Context,
    records: Annotated[list[str], typer.Argument(metavar="VSID:CA[=NEW_CA]...", help="The records to move.")],
    *,
    host_name: Annotated[
        str | None, typer.Option("--host", help="The destination host (its agent's registered PA).")
    ] = None,
    pa: Annotated[
        str | None, typer.Option(help="The destination PA (a registered provider address).", parser=ipv4)
    ] = None,
) -> None:
    """Move a VM's records to another host in one transaction, each optionally to a new CA (failover);
    nothing moves unless all do."""
    if (host_name is None) == (pa is None):
        raise typer.BadParameter("give exactly one of --host and --pa")
    moves = [parse_move(text) for text in records]
    destination: dict[str, Any] = {"host_name": host_name} if host_name is not None else {"pa": pa}
    with _client(ctx) as client:
        moved = client.move_lookup_records(moves=moves, **destination)
    if settings(ctx).json_output:
        show(ctx, moved)
        return
    show_list(ctx, moved.lookup_records, title=f"moved to {moved.pa} at revision {moved.revision}")


def get_host(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The host's name.")]) -> None:
    """A host's PA, when it was registered, and whether its agent is alive now."""
    with _client(ctx) as client:
        show(ctx, client.get_host(host_name=name))


def list_hosts(ctx: typer.Context) -> None:
    """Every registered host, page after page."""
    with _client(ctx) as client:
        show_list(ctx, client.list_hosts(), title="hosts")


def _move_command(group: typer.Typer) -> None:
    group.command("move")(move_records)


def _host_commands(group: typer.Typer) -> None:
    group.command("get")(get_host)
    group.command("list")(list_hosts)


RESOURCES = {
    "routing-domain": Resource(
        noun="routing_domain",
        plural="routing_domains",
        cmdlet="HNV RoutingDomainID: a tenant's isolation boundary",
        keys=[Opt("rdid", Annotated[str, typer.Argument(help="The routing domain's ID.")])],
        add=[
            Opt("tenant", Annotated[str, typer.Option(help="The tenant's name.")], field="tenant_name"),
            Opt("rdid", Annotated[str, typer.Option(help="UUID; generated when omitted.")], ""),
            Opt("description", str, ""),
        ],
        changes=[Opt("tenant", str | None, None, field="tenant_name"), Opt("description", str | None, None)],
    ),
    "subnet": Resource(
        noun="virtual_subnet",
        plural="virtual_subnets",
        cmdlet="HNV VirtualSubnetID: a VSID with its CA prefixes, in one routing domain",
        keys=[Opt("vsid", Annotated[int, typer.Argument(help="The VSID.", min=MIN_VSID, max=MAX_VSID)])],
        add=[
            Opt("vsid", Vsid),
            Opt("rdid", Rdid),
            Opt(
                "prefix",
                Annotated[list[str], typer.Option(help="CA prefix, CIDR; repeat.", parser=prefix)],
                field="ca_prefixes",
            ),
            Opt(
                "gateway_ip",
                Annotated[str, typer.Option(help="Default: the first prefix's first host.", parser=ipv4)],
                "",
            ),
            Opt(
                "gateway_mac",
                Annotated[str, typer.Option(help="Default: 02:4f:4c and the VSID.", parser=mac)],
                "",
            ),
            Opt("description", str, ""),
        ],
        changes=[
            Opt(
                "prefix",
                Annotated[
                    list[str] | None, typer.Option(help="Replaces all CA prefixes; repeat.", parser=prefix)
                ],
                None,
                field="ca_prefixes",
                convert=_nonempty,
            ),
            Opt("gateway_ip", OptionalIp, None),
            Opt("gateway_mac", OptionalMac, None),
            Opt("description", str | None, None),
        ],
        filters=[Opt("rdid", OnlyRdid, "")],
    ),
    "provider-address": Resource(
        noun="provider_address",
        plural="provider_addresses",
        cmdlet="New-NetVirtualizationProviderAddress",
        keys=[
            Opt(
                "pa", Annotated[str, typer.Argument(help="The provider address.", parser=ipv4)], field="pa_ip"
            )
        ],
        add=[
            Opt("host", Annotated[str, typer.Option(help="The host's name.")], field="host_name"),
            Opt(
                "pa",
                Annotated[str, typer.Option(help="The provider address, IPv4.", parser=ipv4)],
                field="pa_ip",
            ),
            Opt("prefix_length", Annotated[int, typer.Option(help="1..32.", min=1, max=32)]),
            Opt(
                "vlan",
                Annotated[int, typer.Option(help="1..4094; 0 is untagged.", min=0, max=4094)],
                0,
                field="vlan_id",
            ),
        ],
        changes=[
            Opt("host", str | None, None, field="host_name"),
            Opt("prefix_length", Annotated[int | None, typer.Option(min=1, max=32)], None),
            Opt("vlan", Annotated[int | None, typer.Option(min=0, max=4094)], None, field="vlan_id"),
        ],
    ),
    "lookup-record": Resource(
        noun="lookup_record",
        plural="lookup_records",
        cmdlet="New-NetVirtualizationLookupRecord",
        keys=_RECORD_KEYS,
        add=[
            *_RECORD_KEYS,
            Opt("mac", Mac),
            Opt(
                "pa",
                Annotated[str, typer.Option(help="The PA of the VM's host (a registered one).", parser=ipv4)],
            ),
            Opt("vm", Annotated[str, typer.Option(help="The VM's name.")], "", field="vm_name"),
            Opt(
                "rule",
                Annotated[Rule, typer.Option(help="encap (NVGRE) or none.")],
                Rule.encap,
                convert=_rule,
            ),
            Opt(
                "record_type",
                Annotated[RecordType, typer.Option("--type", help="The record's kind.")],
                RecordType.static,
                field="type",
                convert=_type,
            ),
        ],
        changes=[
            Opt("mac", OptionalMac, None),
            Opt(
                "pa",
                Annotated[str | None, typer.Option(help="A new host: how a VM live-migrates.", parser=ipv4)],
                None,
            ),
            Opt("vm", str | None, None, field="vm_name"),
            Opt("rule", Rule | None, None, convert=_rule),
            Opt(
                "record_type",
                Annotated[RecordType | None, typer.Option("--type")],
                None,
                field="type",
                convert=_type,
            ),
        ],
        filters=[
            Opt("vsid", OnlyVsid, 0),
            Opt("rdid", OnlyRdid, ""),
            Opt("pa", Annotated[str, typer.Option(help="Only the records on this host.", parser=ipv4)], ""),
        ],
        more=_move_command,
    ),
    "route": Resource(
        noun="customer_route",
        plural="customer_routes",
        cmdlet="New-NetVirtualizationCustomerRoute",
        keys=_ROUTE_KEYS,
        add=[
            *_ROUTE_KEYS,
            Opt("metric", Annotated[int, typer.Option(help="Lowest wins.", min=0, max=UINT32_MAX)], 0),
        ],
        changes=[
            Opt(
                "metric",
                Annotated[int | None, typer.Option(help="Lowest wins.", min=0, max=UINT32_MAX)],
                None,
            )
        ],
        filters=[Opt("rdid", OnlyRdid, ""), Opt("vsid", OnlyVsid, 0)],
    ),
}


GROUPS: dict[str, LazyGroup] = {
    **RESOURCES,
    "host": Commands("Hosts as their vswitch agents registered them (name and PA).", _host_commands),
}


class _PolicyGroup(ResourceGroups):
    resources = GROUPS


app = service_group(PolicyClient, "policy", cls=_PolicyGroup)


@app.command("select-next-hop")
def select_next_hop(
    ctx: typer.Context,
    *,
    source: Annotated[str, typer.Option(help="The sender's CA.", parser=ipv4)],
    destination: Annotated[str, typer.Option(help="The destination CA.", parser=ipv4)],
    vsid: Annotated[
        int | None, typer.Option(help="The sender's VSID (or give --rdid).", min=MIN_VSID, max=MAX_VSID)
    ] = None,
    rdid: Annotated[str | None, typer.Option(help="The routing domain (or give --vsid).")] = None,
) -> None:
    """Select-NetVirtualizationNextHop: which PA and VSID a packet goes to, and why."""
    if (vsid is None) == (rdid is None):
        raise typer.BadParameter("give exactly one of --vsid and --rdid")
    scope: dict[str, Any] = {"vsid": vsid} if vsid is not None else {"rdid": rdid}
    with _client(ctx) as client:
        hop = client.select_next_hop(source_ca=source, destination_ca=destination, **scope)
    if settings(ctx).json_output:
        show(ctx, hop)
        return
    summary = {
        "found": hop.found,
        "pa": hop.pa,
        "vsid": hop.vsid,
        "mac": hop.mac,
        "rule": short_enum_name(LookupRule.Name(hop.rule), "LOOKUP_RULE_"),
        "source vsid": hop.source_vsid,
    }
    show_mapping(ctx, summary, title="next hop")
    for number, reason in enumerate(hop.reasons, start=1):
        settings(ctx).out.print(f"{number}. {reason}", highlight=False)


@app.command("bulk-load")
def bulk_load(
    ctx: typer.Context,
    *,
    file: Annotated[str, typer.Argument(help="JSON lines or CSV of lookup records; - for stdin.")],
    file_format: Annotated[
        FileFormat, typer.Option("--format", help="auto: by name or content.")
    ] = FileFormat.auto,
    chunk: Annotated[int, typer.Option(help="Records per stream message.", min=1, max=100_000)] = 1000,
    timeout: Annotated[
        float, typer.Option(help="Deadline of the whole load, seconds.", parser=seconds)
    ] = 300.0,
    create_only: Annotated[
        bool, typer.Option(help="Only create: fail (exit 5) naming the records that exist already.")
    ] = False,
) -> None:
    """Upsert many lookup records in one stream; the file is checked whole before anything is sent.
    The result says how many live records were replaced."""
    text = read_text_file(file)
    fmt = guess_format(file, text) if file_format is FileFormat.auto else RecordFormat(file_format.value)
    records = parse_records(text, fmt)
    with _client(ctx) as client:
        result = client.with_options(timeout=timeout).bulk_apply(
            records, chunk=chunk, create_only=create_only
        )
    show(ctx, result, title=f"{len(records)} records loaded, {result.replaced} replaced")


def _event_line(event: types_pb2.TableEvent) -> str:
    kind = event.entry.WhichOneof("resource") or "-"
    change = types_pb2.TableEvent.Type.Name(event.type).removeprefix("TYPE_")
    return f"{event.revision}\t{change}\t{kind}\t{event.key}"


@app.command("watch")
def watch(
    ctx: typer.Context,
    *,
    from_revision: Annotated[
        int, typer.Option("--from", help="Changes after this revision; 0: from now.", min=0, max=INT64_MAX)
    ] = 0,
    rdid: Annotated[list[str] | None, typer.Option(help="Only these routing domains; repeat.")] = None,
    count: Annotated[
        int, typer.Option(help="Stop after this many changes; 0: run until Ctrl-C.", min=0, max=INT64_MAX)
    ] = 0,
) -> None:
    """Stream table changes: revision, PUT/DELETE, kind and key (JSON: one event per line)."""
    seen = 0
    json_output = settings(ctx).json_output
    with _client(ctx) as client:
        for response in client.watch_table(start_revision=from_revision, rdids=rdid or []):
            for entry in response.unreadable:
                # On stderr: the stream of changes stays what a script reads.
                typer.echo(
                    f"unreadable value skipped: {entry.key} ({entry.reason}); see 'policy check'", err=True
                )
            for event in response.events:
                if json_output:
                    show_json_line(event)
                else:
                    typer.echo(_event_line(event))
                seen += 1
                if count and seen >= count:
                    return


@app.command("status")
def status(ctx: typer.Context) -> None:
    """The store revision and, per host, the revision its agent has applied and its lag."""
    with _client(ctx) as client:
        table_status = client.get_table_status()
    show_sections(ctx, table_status, f"store revision {table_status.revision}", ["hosts"])


@app.command("check")
def check(
    ctx: typer.Context,
    *,
    quarantine: Annotated[
        bool,
        typer.Option(
            help="Move each unreadable value under /overland/quarantine/ (agents never look there)."
        ),
    ] = False,
) -> None:
    """Values in etcd the service cannot read (written around it): key, mod revision and what is wrong;
    with --quarantine, move each aside (one transaction per key, compared on its mod revision)."""
    with _client(ctx) as client:
        found = client.check_table(quarantine=quarantine)
    show_sections(
        ctx,
        found,
        f"{found.checked} keys checked at revision {found.revision}: {found.found} unreadable, "
        f"{found.quarantined} quarantined",
        ["unreadable"],
    )
