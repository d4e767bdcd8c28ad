"""``overland policy``: the routing table, with commands after the HNV cmdlets of Windows Server 2012.

``routing-domain``, ``subnet``, ``provider-address``, ``lookup-record`` and ``route`` each have
``add|get|list|update|remove``. ``update`` reads the resource, changes the options given and writes it
back guarded by the revision it read, so a concurrent change makes it fail (ABORTED) instead of being
overwritten.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from overland.cli.common import (
    service_group,
    settings,
    show,
    show_json_line,
    show_mapping,
    show_sections,
)
from overland.cli.resources import Opt, Resource
from overland.client import PolicyClient
from overland.defaults import MAX_VSID, MIN_VSID
from overland.records import RecordFormat, enum_value, guess_format, parse_records, short_enum_name
from overland.v1 import types_pb2
from overland.v1.types_pb2 import LookupRule, LookupType

app = service_group(PolicyClient, "policy")

RULES = click.Choice(["encap", "none"])
RECORD_TYPES = click.Choice(["static", "l2-only", "gateway-wildcard"])
FILE_FORMATS = click.Choice(["auto", "jsonl", "csv"])


def _client(ctx: click.Context) -> PolicyClient:
    return settings(ctx).client(PolicyClient)


def _rule(rule: str) -> str:
    return enum_value(rule, LookupRule, "LOOKUP_RULE_")


def _type(record_type: str) -> str:
    return enum_value(record_type, LookupType, "LOOKUP_TYPE_")


def _nonempty(values: list[str]) -> list[str] | None:
    return values or None


_VSID = Opt("vsid", f"Virtual subnet ID, {MIN_VSID}..{MAX_VSID}.", int)
_RDID = Opt("rdid", "Routing domain ID.")
_ONLY_RDID = Opt("rdid", "Only this routing domain.", str, "")
_ONLY_VSID = Opt("vsid", "Only this virtual subnet.", int, 0)
_ROUTE_KEYS = (
    _RDID,
    _VSID,
    Opt("prefix", "Destination prefix, CIDR.", field="destination_prefix"),
    Opt("next_hop", "Next hop IPv4; 0.0.0.0 means on-link."),
)
_RECORD_KEYS = (_VSID, Opt("ca", "Customer address (IPv4)."))

RESOURCES = {
    "routing-domain": Resource(
        noun="routing_domain",
        plural="routing_domains",
        cmdlet="HNV RoutingDomainID: a tenant's isolation boundary",
        keys=[Opt("rdid", argument=True)],
        add=[
            Opt("tenant", "The tenant's name.", field="tenant_name"),
            Opt("rdid", "UUID; generated when omitted.", str, ""),
            Opt("description", default=""),
        ],
        changes=[Opt("tenant", default=None, field="tenant_name"), Opt("description", default=None)],
    ),
    "subnet": Resource(
        noun="virtual_subnet",
        plural="virtual_subnets",
        cmdlet="HNV VirtualSubnetID: a VSID with its CA prefixes, in one routing domain",
        keys=[Opt("vsid", type=int, argument=True)],
        add=[
            _VSID,
            _RDID,
            Opt("prefix", "CA prefix, CIDR; repeat.", multiple=True, field="ca_prefixes"),
            Opt("gateway_ip", default=""),
            Opt("gateway_mac", default=""),
            Opt("description", default=""),
        ],
        changes=[
            Opt(
                "prefix",
                "Replaces all CA prefixes; repeat.",
                default=None,
                multiple=True,
                field="ca_prefixes",
                convert=_nonempty,
            ),
            Opt("gateway_ip", default=None),
            Opt("gateway_mac", default=None),
            Opt("description", default=None),
        ],
        filters=[_ONLY_RDID],
    ),
    "provider-address": Resource(
        noun="provider_address",
        plural="provider_addresses",
        cmdlet="New-NetVirtualizationProviderAddress",
        keys=[Opt("pa", argument=True, field="pa_ip")],
        add=[
            Opt("host", "The host's name.", field="host_name"),
            Opt("pa", "The provider address, IPv4.", field="pa_ip"),
            Opt("prefix_length", "1..32.", int),
            Opt("vlan", "1..4094; 0 is untagged.", int, 0, field="vlan_id"),
        ],
        changes=[
            Opt("host", default=None, field="host_name"),
            Opt("prefix_length", type=int, default=None),
            Opt("vlan", type=int, default=None, field="vlan_id"),
        ],
    ),
    "lookup-record": Resource(
        noun="lookup_record",
        plural="lookup_records",
        cmdlet="New-NetVirtualizationLookupRecord",
        keys=_RECORD_KEYS,
        add=[
            *_RECORD_KEYS,
            Opt("mac", "The VM NIC's MAC, aa:bb:cc:dd:ee:ff."),
            Opt("pa", "The PA of the VM's host (a registered one)."),
            Opt("vm", "The VM's name.", str, "", field="vm_name"),
            Opt("rule", "encap (NVGRE) or none.", RULES, "encap", convert=_rule),
            Opt("record_type", "The record's kind.", RECORD_TYPES, "static", "type", _type, flag="--type"),
        ],
        changes=[
            Opt("mac", default=None),
            Opt("pa", "A new host: how a VM live-migrates.", default=None),
            Opt("vm", default=None, field="vm_name"),
            Opt("rule", type=RULES, default=None, convert=_rule),
            Opt("record_type", type=RECORD_TYPES, default=None, field="type", convert=_type, flag="--type"),
        ],
        filters=[_ONLY_VSID, _ONLY_RDID, Opt("pa", "Only the records on this host.", str, "")],
    ),
    "route": Resource(
        noun="customer_route",
        plural="customer_routes",
        cmdlet="New-NetVirtualizationCustomerRoute",
        keys=_ROUTE_KEYS,
        add=[*_ROUTE_KEYS, Opt("metric", "Lowest wins.", int, 0)],
        changes=[Opt("metric", "Lowest wins.", int, None)],
        filters=[_ONLY_RDID, _ONLY_VSID],
    ),
}
for _name, _resource in RESOURCES.items():
    _group = click.Group(_name, help=f"{_resource.cmdlet}.")
    _resource.register(_group)
    app.add_command(_group)


@app.command("select-next-hop")
@click.option("--source", required=True, help="The sender's CA.")
@click.option("--destination", required=True, help="The destination CA.")
@click.option("--vsid", type=int, help="The sender's VSID (or give --rdid).")
@click.option("--rdid", help="The routing domain (or give --vsid).")
@click.pass_context
def select_next_hop(
    ctx: click.Context, *, source: str, destination: str, vsid: int | None, rdid: str | None
) -> None:
    """Select-NetVirtualizationNextHop: which PA and VSID a packet goes to, and why."""
    if (vsid is None) == (rdid is None):
        raise click.BadParameter("give exactly one of --vsid and --rdid")
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
@click.argument("file")
@click.option("--format", "file_format", type=FILE_FORMATS, default="auto", help="auto: by name or content.")
@click.option("--chunk", type=int, default=1000, help="Records per stream message.")
@click.option("--timeout", type=float, default=300.0, help="Deadline of the whole load, seconds.")
@click.pass_context
def bulk_load(ctx: click.Context, *, file: str, file_format: str, chunk: int, timeout: float) -> None:
    """Upsert many lookup records in one stream from FILE (JSON lines or CSV; - for stdin); the file
    is checked whole before anything is sent."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as error:
        raise click.BadParameter(f"cannot read {file}: {error.strerror}") from None
    fmt = guess_format(file, text) if file_format == "auto" else RecordFormat(file_format)
    records = parse_records(text, fmt)
    with _client(ctx) as client:
        result = client.with_options(timeout=timeout).bulk_apply(records, chunk=chunk)
    show(ctx, result, title=f"{len(records)} records loaded")


def _event_line(event: types_pb2.TableEvent) -> str:
    kind = event.entry.WhichOneof("resource") or "-"
    change = types_pb2.TableEvent.Type.Name(event.type).removeprefix("TYPE_")
    return f"{event.revision}\t{change}\t{kind}\t{event.key}"


@app.command("watch")
@click.option(
    "--from", "from_revision", type=int, default=0, help="Changes after this revision; 0: from now."
)
@click.option("--rdid", multiple=True, help="Only these routing domains; repeat.")
@click.option("--count", type=int, default=0, help="Stop after this many changes; 0: run until Ctrl-C.")
@click.pass_context
def watch(ctx: click.Context, *, from_revision: int, rdid: tuple[str, ...], count: int) -> None:
    """Stream table changes: revision, PUT/DELETE, kind and key (JSON: one event per line)."""
    seen = 0
    json_output = settings(ctx).json_output
    with _client(ctx) as client:
        for response in client.watch_table(start_revision=from_revision, rdids=list(rdid)):
            for event in response.events:
                if json_output:
                    show_json_line(event)
                else:
                    click.echo(_event_line(event))
                seen += 1
                if count and seen >= count:
                    return


@app.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """The store revision and, per host, the revision its agent has applied and its lag."""
    with _client(ctx) as client:
        table_status = client.get_table_status()
    show_sections(ctx, table_status, f"store revision {table_status.revision}", ["hosts"])
