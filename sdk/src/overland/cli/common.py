"""What every ``overland`` command shares: settings, clients, output (tables or JSON) and exit codes.

Errors are reported in one place, ``overland.cli.root.OverlandGroup.invoke``, with ``report_error``
and ``exit_code_for``: one line on stderr and an exit code that says what went wrong. rich is imported
when a table is printed, not before: ``--json`` output and errors never load it.
"""

from __future__ import annotations

import enum
import functools
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from typer.core import TyperGroup

from overland._transport import SyncTransport
from overland.cli.exits import EXIT_ERROR, EXIT_USAGE
from overland.cli.groups import GROUPS, new_typer
from overland.config import ClientConfig, Endpoint, Service
from overland.errors import ConfigurationError, OverlandError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from overland.v1 import replica_pb2

ClientT = TypeVar("ClientT", bound=SyncTransport)

# Tables written to a pipe or file are not cut to 80 columns: nobody reads them in a narrow terminal.
WIDE_OUTPUT = 200

# Exit codes by status, so that scripts can tell "not there" from "try again later".
EXIT_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 3,
    grpc.StatusCode.OUT_OF_RANGE: 3,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.FAILED_PRECONDITION: 6,
    grpc.StatusCode.ABORTED: 6,
    grpc.StatusCode.UNAVAILABLE: 7,
    grpc.StatusCode.DEADLINE_EXCEEDED: 7,
    grpc.StatusCode.PERMISSION_DENIED: 8,
    grpc.StatusCode.UNAUTHENTICATED: 8,
}


def exit_code_for(error: OverlandError) -> int:
    if isinstance(error, ConfigurationError):
        return EXIT_USAGE
    return EXIT_CODES.get(error.code, EXIT_ERROR)


@dataclass
class Settings:
    """The root options, kept on the typer context for every subcommand."""

    config: ClientConfig
    json_output: bool = False
    endpoints: dict[Service, str] = field(default_factory=dict)

    @functools.cached_property
    def out(self) -> Console:
        """Where tables go."""
        from rich.console import Console  # noqa: PLC0415 - rich loads with the first table

        return Console(width=None if sys.stdout.isatty() else WIDE_OUTPUT)

    def client(self, client_class: type[ClientT]) -> ClientT:
        endpoint: Endpoint | str | None = self.endpoints.get(client_class.service)
        return client_class(endpoint, config=self.config)


def settings(ctx: typer.Context) -> Settings:
    found = ctx.find_object(Settings)
    if found is None:
        raise ConfigurationError("the root command did not run")
    return found


def report_error(error: OverlandError, json_output: bool) -> None:
    """One line on stderr: the status name, the message and the field violations."""
    if json_output:
        violations = [{"field": v.field, "description": v.description} for v in error.field_violations]
        body = {"code": error.code.name, "message": error.message, "field_violations": violations}
        line = json.dumps({"error": body})
    else:
        line = f"overland: {error.code.name}: {error}"
    typer.echo(line.replace("\n", " "), err=True)


def as_dict(message: Message) -> dict[str, Any]:
    """The message as JSON would show it, with the proto field names, and 64-bit integers as numbers
    (protobuf's JSON mapping writes them as strings, which scripts then have to convert)."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(message.DESCRIPTOR, data)


# The 64-bit integer field types protobuf's JSON mapping writes as strings.
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _numbers(descriptor: Any, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a message of type ``descriptor`` as MessageToDict made it) with its 64-bit integer
    fields, and theirs in nested messages, lists and maps, as ints. Well-known types keep their
    own JSON form."""
    for member in descriptor.fields:
        if member.name not in data:
            continue
        value = data[member.name]
        if member.message_type is not None and member.message_type.GetOptions().map_entry:
            entry = member.message_type.fields_by_name["value"]
            data[member.name] = {k: _number_value(entry, v) for k, v in value.items()}
        elif member.is_repeated:
            data[member.name] = [_number_value(member, v) for v in value]
        else:
            data[member.name] = _number_value(member, value)
    return data


def _number_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type in _INT64_TYPES:
        return int(value)
    message_type = field.message_type
    if message_type is not None and not message_type.full_name.startswith("google.protobuf."):
        return _numbers(message_type, value)
    return value


def _short_enums(message: Message, data: dict[str, Any]) -> dict[str, Any]:
    """Enum values without their type prefix (``LOOKUP_RULE_ENCAP`` -> ``ENCAP``), for tables."""
    for name, value in data.items():
        descriptor = message.DESCRIPTOR.fields_by_name.get(name)
        if descriptor is None or descriptor.enum_type is None or not isinstance(value, str):
            continue
        # By the proto style guide value 0 is PREFIX_UNSPECIFIED, which names the prefix to drop.
        zero = descriptor.enum_type.values[0].name
        if zero.endswith("_UNSPECIFIED"):
            data[name] = value.removeprefix(zero.removesuffix("UNSPECIFIED"))
    return data


def _table_row(message: Message) -> dict[str, Any]:
    return _short_enums(message, as_dict(message))


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def new_table(*columns: str, **options: Any) -> Table:
    """A rich table (rich loads here, with the first table a command prints)."""
    from rich.table import Table  # noqa: PLC0415 - see the module docstring

    return Table(*columns, **options)


def show(ctx: typer.Context, message: Message, title: str | None = None) -> None:
    """One resource: a JSON object, or a two-column table of its fields."""
    show_mapping(ctx, as_dict(message) if settings(ctx).json_output else _table_row(message), title)


def show_list(ctx: typer.Context, messages: Iterable[Message], title: str | None = None) -> int:
    """Many resources of one kind: a JSON array, or a table with a column per field. Returns the count."""
    current = settings(ctx)
    rows = [as_dict(m) if current.json_output else _table_row(m) for m in messages]
    if current.json_output:
        typer.echo(json.dumps(rows))
        return len(rows)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = new_table(*columns, title=title)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*(_cell(row.get(column, "")) for column in columns))
    current.out.print(table)
    return len(rows)


def show_mapping(ctx: typer.Context, data: Mapping[str, Any], title: str | None = None) -> None:
    """A mapping (a resource's fields, a summary), as a JSON object or a two-column table."""
    current = settings(ctx)
    if current.json_output:
        typer.echo(json.dumps(dict(data)))
        return
    table = new_table("field", "value", title=title, show_header=False)
    for key, value in data.items():
        table.add_row(key, _cell(value))
    current.out.print(table)


def show_sections(ctx: typer.Context, message: Message, header: str, sections: Iterable[str]) -> None:
    """A message with lists: as one JSON object, or a header line and a table per list field."""
    current = settings(ctx)
    if current.json_output:
        show(ctx, message)
        return
    current.out.print(header, highlight=False)
    for name in sections:
        show_list(ctx, getattr(message, name), title=name.replace("_", " "))


def show_json_line(message: Message) -> None:
    """One message per line, for streams (``--json`` output of ``watch``)."""
    typer.echo(json.dumps(as_dict(message)))


def service_group(
    client_class: type[SyncTransport], name: str, cls: type[TyperGroup] | None = None
) -> typer.Typer:
    """The command group ``name`` for one service, with its ``--endpoint`` option; its help is the
    one the root lists (``overland.cli.groups.GROUPS``). ``cls``: the group's own ``TyperGroup``."""
    service = client_class.service
    group = new_typer(name, GROUPS[name].help, cls=cls)

    @group.callback()
    def _endpoint(
        ctx: typer.Context,
        # A default rather than Annotated: the help names this group's variable, and a string
        # annotation (from __future__) is evaluated in the module, which has no ``service``.
        endpoint: str | None = typer.Option(
            None, "--endpoint", "-e", help=f"host:port of the service [env {service.env_var}]"
        ),
    ) -> None:
        if endpoint:
            settings(ctx).endpoints[service] = endpoint

    return group


class DiskFormat(enum.StrEnum):
    """``--format`` of the commands that take disks: the API's ``DiskFormat``, never guessed."""

    vhd = "vhd"
    raw = "raw"


DISK_FORMAT_HELP = "The disks' format: vhd (checked; anything else is refused) or raw (only when asked for)."


def disk_spec(spec: str, disk_format: DiskFormat = DiskFormat.vhd) -> replica_pb2.VmDisk:
    """A VM disk from ``NAME=PATH`` (``--disk`` of ``replica enable`` and ``vm new``) in ``disk_format``."""
    from overland.v1 import replica_pb2  # noqa: PLC0415 - only the commands that take disks need it

    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise typer.BadParameter(f"--disk takes NAME=PATH, got {spec!r}")
    return replica_pb2.VmDisk(name=name, path=path, format=f"DISK_FORMAT_{disk_format.name.upper()}")


def apply_changes(message: Message, changes: Mapping[str, Any]) -> None:
    """Set the fields given (not None) on ``message``; a list replaces a repeated field."""
    for name, value in changes.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            repeated = getattr(message, name)
            del repeated[:]
            repeated.extend(value)
        else:
            setattr(message, name, value)


def read_text_file(name: str, what: str = "FILE") -> str:
    """The text of the file a command names (``-``: stdin), or a usage error (exit 2) about ``what``
    that says why not: missing, a directory, unreadable, not UTF-8, not a file name at all."""
    try:
        if name == "-":
            return sys.stdin.read()
        with open(name, encoding="utf-8") as opened:
            return opened.read()
    except OSError as error:
        raise typer.BadParameter(f"cannot read {name}: {error.strerror or error}", param_hint=what) from None
    except UnicodeDecodeError as error:
        raise typer.BadParameter(f"{name} is not UTF-8 text (byte {error.start})", param_hint=what) from None
    except ValueError:  # a NUL byte: no file has such a name
        raise typer.BadParameter(f"{name!r} is not a file name", param_hint=what) from None
