"""``overland policy``: the routing table, with commands after the HNV cmdlets of Windows Server 2012.

``routing-domain``, ``subnet``, ``provider-address``, ``lookup-record`` and ``route`` each have
``add|get|list|update|remove``. ``update`` reads the resource, changes the options given and writes it
back guarded by the revision it read, so a concurrent change makes it fail (ABORTED) instead of being
overwritten.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf.message import Message

from overland.cli.common import (
    apply_changes,
    service_group,
    settings,
    show,
    show_json_line,
    show_list,
    show_mapping,
)
from overland.client import PolicyClient
from overland.records import RecordFormat, enum_value, guess_format, parse_records, short_enum_name
from overland.v1 import types_pb2
from overland.v1.types_pb2 import LookupRule, LookupType

app = service_group(PolicyClient, "The policy service: the network virtualization routing table.")
routing_domain_app = typer.Typer(no_args_is_help=True, help="Routing domains (tenants; HNV RDID).")
subnet_app = typer.Typer(no_args_is_help=True, help="Virtual subnets (VSID, the GRE key).")
provider_address_app = typer.Typer(no_args_is_help=True, help="Provider addresses (hosts).")
lookup_record_app = typer.Typer(no_args_is_help=True, help="Lookup records: where each CA lives.")
route_app = typer.Typer(no_args_is_help=True, help="Customer routes inside a routing domain.")
app.add_typer(routing_domain_app, name="routing-domain")
app.add_typer(subnet_app, name="subnet")
app.add_typer(provider_address_app, name="provider-address")
app.add_typer(lookup_record_app, name="lookup-record")
app.add_typer(route_app, name="route")


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


ExpectedRevision = Annotated[
    int | None,
    typer.Option(help="Fail with ABORTED unless the stored revision is this (update: default the one read)."),
]
Vsid = Annotated[int, typer.Option("--vsid", help="Virtual subnet ID, 4096..16777214.")]
Ca = Annotated[str, typer.Option("--ca", help="Customer address (IPv4).")]
Rdid = Annotated[str, typer.Option("--rdid", help="Routing domain ID.")]
Prefix = Annotated[str, typer.Option("--prefix", help="Destination prefix, CIDR.")]
NextHop = Annotated[str, typer.Option("--next-hop", help="Next hop IPv4; 0.0.0.0 means on-link.")]


def _client(ctx: typer.Context) -> PolicyClient:
    return settings(ctx).client(PolicyClient)


def _rule(rule: Rule | None) -> str | None:
    return None if rule is None else enum_value(rule.value, LookupRule, "LOOKUP_RULE_")


def _type(record_type: RecordType | None) -> str | None:
    return None if record_type is None else enum_value(record_type.value, LookupType, "LOOKUP_TYPE_")


def _read_modify_write(
    ctx: typer.Context,
    read: Callable[[], Message],
    write: Callable[..., Message],
    field: str,
    expected_revision: int | None,
    **changes: Any,
) -> None:
    current: Any = read()
    apply_changes(current, changes)
    guard = current.revision if expected_revision is None else expected_revision
    show(ctx, write(**{field: current, "expected_revision": guard}))


@routing_domain_app.command("add")
def routing_domain_add(
    ctx: typer.Context,
    *,
    tenant: Annotated[str, typer.Option(help="The tenant's name.")],
    rdid: Annotated[str, typer.Option(help="UUID; generated when omitted.")] = "",
    description: str = "",
) -> None:
    """A routing domain: one tenant's isolation boundary (HNV RoutingDomainID)."""
    with _client(ctx) as client:
        show(ctx, client.create_routing_domain(rdid=rdid, tenant_name=tenant, description=description))


@routing_domain_app.command("get")
def routing_domain_get(ctx: typer.Context, rdid: str) -> None:
    with _client(ctx) as client:
        show(ctx, client.get_routing_domain(rdid=rdid))


@routing_domain_app.command("list")
def routing_domain_list(ctx: typer.Context) -> None:
    with _client(ctx) as client:
        show_list(ctx, client.list_routing_domains(), title="routing domains")


@routing_domain_app.command("update")
def routing_domain_update(
    ctx: typer.Context,
    *,
    rdid: str,
    tenant: str | None = None,
    description: str | None = None,
    expected_revision: ExpectedRevision = None,
) -> None:
    with _client(ctx) as client:
        _read_modify_write(
            ctx,
            lambda: client.get_routing_domain(rdid=rdid),
            client.update_routing_domain,
            "routing_domain",
            expected_revision,
            tenant_name=tenant,
            description=description,
        )


@routing_domain_app.command("remove")
def routing_domain_remove(ctx: typer.Context, rdid: str, expected_revision: ExpectedRevision = None) -> None:
    with _client(ctx) as client:
        show(ctx, client.delete_routing_domain(rdid=rdid, expected_revision=expected_revision or 0))


@subnet_app.command("add")
def subnet_add(
    ctx: typer.Context,
    *,
    vsid: Vsid,
    rdid: Rdid,
    prefix: Annotated[list[str], typer.Option(help="CA prefix, CIDR; repeat for several.")],
    gateway_ip: str = "",
    gateway_mac: str = "",
    description: str = "",
) -> None:
    """A virtual subnet: a VSID with its CA prefixes, in one routing domain."""
    with _client(ctx) as client:
        created = client.create_virtual_subnet(
            vsid=vsid,
            rdid=rdid,
            ca_prefixes=prefix,
            gateway_ip=gateway_ip,
            gateway_mac=gateway_mac,
            description=description,
        )
        show(ctx, created)


@subnet_app.command("get")
def subnet_get(ctx: typer.Context, vsid: int) -> None:
    with _client(ctx) as client:
        show(ctx, client.get_virtual_subnet(vsid=vsid))


@subnet_app.command("list")
def subnet_list(
    ctx: typer.Context, *, rdid: Annotated[str, typer.Option(help="Only this routing domain.")] = ""
) -> None:
    with _client(ctx) as client:
        show_list(ctx, client.list_virtual_subnets(rdid=rdid), title="virtual subnets")


@subnet_app.command("update")
def subnet_update(
    ctx: typer.Context,
    *,
    vsid: int,
    prefix: Annotated[list[str] | None, typer.Option(help="Replaces all CA prefixes; repeat.")] = None,
    gateway_ip: str | None = None,
    gateway_mac: str | None = None,
    description: str | None = None,
    expected_revision: ExpectedRevision = None,
) -> None:
    with _client(ctx) as client:
        _read_modify_write(
            ctx,
            lambda: client.get_virtual_subnet(vsid=vsid),
            client.update_virtual_subnet,
            "virtual_subnet",
            expected_revision,
            ca_prefixes=prefix or None,
            gateway_ip=gateway_ip,
            gateway_mac=gateway_mac,
            description=description,
        )


@subnet_app.command("remove")
def subnet_remove(ctx: typer.Context, vsid: int, expected_revision: ExpectedRevision = None) -> None:
    with _client(ctx) as client:
        show(ctx, client.delete_virtual_subnet(vsid=vsid, expected_revision=expected_revision or 0))


@provider_address_app.command("add")
def provider_address_add(
    ctx: typer.Context,
    *,
    host: Annotated[str, typer.Option(help="The host's name.")],
    pa: Annotated[str, typer.Option(help="The provider address, IPv4.")],
    prefix_length: Annotated[int, typer.Option(help="1..32.")],
    vlan: Annotated[int, typer.Option(help="1..4094; 0 is untagged.")] = 0,
) -> None:
    """New-NetVirtualizationProviderAddress: register a host's PA."""
    with _client(ctx) as client:
        created = client.create_provider_address(
            host_name=host, pa_ip=pa, prefix_length=prefix_length, vlan_id=vlan
        )
        show(ctx, created)


@provider_address_app.command("get")
def provider_address_get(ctx: typer.Context, pa: str) -> None:
    with _client(ctx) as client:
        show(ctx, client.get_provider_address(pa_ip=pa))


@provider_address_app.command("list")
def provider_address_list(ctx: typer.Context) -> None:
    with _client(ctx) as client:
        show_list(ctx, client.list_provider_addresses(), title="provider addresses")


@provider_address_app.command("update")
def provider_address_update(
    ctx: typer.Context,
    *,
    pa: str,
    host: str | None = None,
    prefix_length: int | None = None,
    vlan: int | None = None,
    expected_revision: ExpectedRevision = None,
) -> None:
    with _client(ctx) as client:
        _read_modify_write(
            ctx,
            lambda: client.get_provider_address(pa_ip=pa),
            client.update_provider_address,
            "provider_address",
            expected_revision,
            host_name=host,
            prefix_length=prefix_length,
            vlan_id=vlan,
        )


@provider_address_app.command("remove")
def provider_address_remove(ctx: typer.Context, pa: str, expected_revision: ExpectedRevision = None) -> None:
    with _client(ctx) as client:
        show(ctx, client.delete_provider_address(pa_ip=pa, expected_revision=expected_revision or 0))


@lookup_record_app.command("add")
def lookup_record_add(
    ctx: typer.Context,
    *,
    ca: Ca,
    vsid: Vsid,
    mac: Annotated[str, typer.Option(help="The VM NIC's MAC, aa:bb:cc:dd:ee:ff.")],
    pa: Annotated[str, typer.Option(help="The PA of the VM's host (a registered provider address).")],
    vm: Annotated[str, typer.Option(help="The VM's name.")] = "",
    rule: Annotated[Rule, typer.Option(help="encap (NVGRE) or none.")] = Rule.encap,
    record_type: Annotated[RecordType, typer.Option("--type", help="The record's kind.")] = RecordType.static,
) -> None:
    """New-NetVirtualizationLookupRecord: where a CA lives (its MAC and its host's PA)."""
    with _client(ctx) as client:
        created = client.create_lookup_record(
            ca=ca, vsid=vsid, mac=mac, pa=pa, vm_name=vm, rule=_rule(rule), type=_type(record_type)
        )
        show(ctx, created)


@lookup_record_app.command("get")
def lookup_record_get(ctx: typer.Context, vsid: Vsid, ca: Ca) -> None:
    with _client(ctx) as client:
        show(ctx, client.get_lookup_record(vsid=vsid, ca=ca))


@lookup_record_app.command("list")
def lookup_record_list(
    ctx: typer.Context,
    *,
    vsid: Annotated[int, typer.Option(help="Only this virtual subnet.")] = 0,
    rdid: Annotated[str, typer.Option(help="Only this routing domain.")] = "",
    pa: Annotated[str, typer.Option(help="Only the records on this host.")] = "",
) -> None:
    """Get-NetVirtualizationLookupRecord: every page, filtered by VSID, RDID or PA."""
    with _client(ctx) as client:
        show_list(ctx, client.list_lookup_records(vsid=vsid, rdid=rdid, pa=pa), title="lookup records")


@lookup_record_app.command("update")
def lookup_record_update(
    ctx: typer.Context,
    *,
    vsid: Vsid,
    ca: Ca,
    mac: str | None = None,
    pa: Annotated[str | None, typer.Option(help="A new host: how a live migration moves a VM.")] = None,
    vm: str | None = None,
    rule: Rule | None = None,
    record_type: Annotated[RecordType | None, typer.Option("--type")] = None,
    expected_revision: ExpectedRevision = None,
) -> None:
    with _client(ctx) as client:
        _read_modify_write(
            ctx,
            lambda: client.get_lookup_record(vsid=vsid, ca=ca),
            client.update_lookup_record,
            "lookup_record",
            expected_revision,
            mac=mac,
            pa=pa,
            vm_name=vm,
            rule=_rule(rule),
            type=_type(record_type),
        )


@lookup_record_app.command("remove")
def lookup_record_remove(
    ctx: typer.Context, *, vsid: Vsid, ca: Ca, expected_revision: ExpectedRevision = None
) -> None:
    with _client(ctx) as client:
        show(ctx, client.delete_lookup_record(vsid=vsid, ca=ca, expected_revision=expected_revision or 0))


@route_app.command("add")
def route_add(
    ctx: typer.Context,
    *,
    rdid: Rdid,
    vsid: Vsid,
    prefix: Prefix,
    next_hop: NextHop,
    metric: Annotated[int, typer.Option(help="Lowest wins.")] = 0,
) -> None:
    """New-NetVirtualizationCustomerRoute."""
    with _client(ctx) as client:
        created = client.create_customer_route(
            rdid=rdid, vsid=vsid, destination_prefix=prefix, next_hop=next_hop, metric=metric
        )
        show(ctx, created)


@route_app.command("get")
def route_get(ctx: typer.Context, rdid: Rdid, vsid: Vsid, prefix: Prefix, next_hop: NextHop) -> None:
    with _client(ctx) as client:
        show(
            ctx, client.get_customer_route(rdid=rdid, vsid=vsid, destination_prefix=prefix, next_hop=next_hop)
        )


@route_app.command("list")
def route_list(
    ctx: typer.Context,
    *,
    rdid: Annotated[str, typer.Option(help="Only this routing domain.")] = "",
    vsid: Annotated[int, typer.Option(help="Only this virtual subnet.")] = 0,
) -> None:
    with _client(ctx) as client:
        show_list(ctx, client.list_customer_routes(rdid=rdid, vsid=vsid), title="customer routes")


@route_app.command("update")
def route_update(
    ctx: typer.Context,
    *,
    rdid: Rdid,
    vsid: Vsid,
    prefix: Prefix,
    next_hop: NextHop,
    metric: Annotated[int, typer.Option(help="Lowest wins.")],
    expected_revision: ExpectedRevision = None,
) -> None:
    with _client(ctx) as client:
        _read_modify_write(
            ctx,
            lambda: client.get_customer_route(
                rdid=rdid, vsid=vsid, destination_prefix=prefix, next_hop=next_hop
            ),
            client.update_customer_route,
            "customer_route",
            expected_revision,
            metric=metric,
        )


@route_app.command("remove")
def route_remove(
    ctx: typer.Context,
    *,
    rdid: Rdid,
    vsid: Vsid,
    prefix: Prefix,
    next_hop: NextHop,
    expected_revision: ExpectedRevision = None,
) -> None:
    with _client(ctx) as client:
        deleted = client.delete_customer_route(
            rdid=rdid,
            vsid=vsid,
            destination_prefix=prefix,
            next_hop=next_hop,
            expected_revision=expected_revision or 0,
        )
        show(ctx, deleted)


@app.command("select-next-hop")
def select_next_hop(
    ctx: typer.Context,
    *,
    source: Annotated[str, typer.Option(help="The sender's CA.")],
    destination: Annotated[str, typer.Option(help="The destination CA.")],
    vsid: Annotated[int | None, typer.Option(help="The sender's VSID (or give --rdid).")] = None,
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
    chunk: Annotated[int, typer.Option(help="Records per stream message.")] = 1000,
    timeout: Annotated[float, typer.Option(help="Deadline of the whole load, seconds.")] = 300.0,
) -> None:
    """Upsert many lookup records in one stream; the file is checked whole before anything is sent."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as error:
        raise typer.BadParameter(f"cannot read {file}: {error.strerror}") from None
    fmt = guess_format(file, text) if file_format is FileFormat.auto else RecordFormat(file_format.value)
    records = parse_records(text, fmt)
    with _client(ctx) as client:
        result = client.with_options(timeout=timeout).bulk_apply(records, chunk=chunk)
    show(ctx, result, title=f"{len(records)} records loaded")


def _event_line(event: types_pb2.TableEvent) -> str:
    kind = event.entry.WhichOneof("resource") or "-"
    change = types_pb2.TableEvent.Type.Name(event.type).removeprefix("TYPE_")
    return f"{event.revision}\t{change}\t{kind}\t{event.key}"


@app.command("watch")
def watch(
    ctx: typer.Context,
    *,
    from_revision: Annotated[
        int, typer.Option("--from", help="Changes after this revision; 0: from now.")
    ] = 0,
    rdid: Annotated[list[str] | None, typer.Option(help="Only these routing domains; repeat.")] = None,
    count: Annotated[int, typer.Option(help="Stop after this many changes; 0: run until Ctrl-C.")] = 0,
) -> None:
    """Stream table changes: revision, PUT/DELETE, kind and key (JSON: one event per line)."""
    seen = 0
    json_output = settings(ctx).json_output
    with _client(ctx) as client:
        for response in client.watch_table(start_revision=from_revision, rdids=rdid or []):
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
    if settings(ctx).json_output:
        show(ctx, table_status)
        return
    settings(ctx).out.print(f"store revision {table_status.revision}", highlight=False)
    show_list(ctx, table_status.hosts, title="hosts")
