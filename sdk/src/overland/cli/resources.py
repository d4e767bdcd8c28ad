"""The add/get/list/update/remove commands of a resource, generated from a declaration of its options.

Each policy resource differs only in which options identify it, which it is created with, which an
update may change and which filter its list; the command bodies are the same. ``Resource.register``
builds the five click commands from those declarations. ``update`` reads the resource, applies the
options given and writes it back guarded by the revision it read: a concurrent change fails with
ABORTED instead of being overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from overland.cli.common import apply_changes, settings, show, show_list
from overland.client import PolicyClient

_REQUIRED = object()


@dataclass(frozen=True)
class Opt:
    """One command-line parameter: its Python name (``--the-name`` as an option), its click type and
    help, its default (none: required; ``None``: left unchanged by an update), and the message field
    it sets (``field``, default its name) after ``convert``."""

    name: str
    help: str = ""
    type: Any = str
    default: Any = _REQUIRED
    field: str = ""
    convert: Callable[[Any], Any] | None = None
    argument: bool = False
    multiple: bool = False
    flag: str = ""

    def parameter(self) -> click.Parameter:
        if self.argument:
            return click.Argument([self.name], type=self.type, metavar=self.name.upper())
        declared = [self.flag or f"--{self.name.replace('_', '-')}", self.name]
        # Without a default rather than a default of None: click takes None as a value given.
        given = {"required": True} if self.default is _REQUIRED else {"default": self.default}
        return click.Option(declared, type=self.type, multiple=self.multiple, help=self.help, **given)

    def value(self, given: Mapping[str, Any]) -> Any:
        raw = given[self.name]
        if self.multiple and raw is not None:
            raw = list(raw)
        return self.convert(raw) if self.convert is not None and raw is not None else raw


def _fields(options: Sequence[Opt], given: Mapping[str, Any]) -> dict[str, Any]:
    return {option.field or option.name: option.value(given) for option in options}


def _command(
    group: click.Group,
    name: str,
    doc: str,
    options: Sequence[Opt],
    run: Callable[[click.Context, PolicyClient, dict[str, Any]], None],
) -> None:
    """Add ``run`` to ``group`` as ``name``, taking ``options``."""

    @click.pass_context
    def command(ctx: click.Context, **given: Any) -> None:
        with settings(ctx).client(PolicyClient) as client:
            run(ctx, client, given)

    group.add_command(
        click.Command(name, callback=command, params=[o.parameter() for o in options], help=doc)
    )


@dataclass(frozen=True)
class Resource:
    """A policy resource's commands. ``noun`` names the client methods (``get_{noun}``...)."""

    noun: str
    plural: str
    cmdlet: str
    keys: Sequence[Opt]
    add: Sequence[Opt]
    changes: Sequence[Opt]
    filters: Sequence[Opt] = ()

    def _method(self, client: PolicyClient, verb: str) -> Callable[..., Any]:
        method: Callable[..., Any] = getattr(client, f"{verb}_{self.plural if verb == 'list' else self.noun}")
        return method

    def register(self, group: click.Group) -> None:
        title, one = self.plural.replace("_", " "), self.noun.replace("_", " ")
        guard = Opt(
            "expected_revision",
            "Fail with ABORTED unless the stored revision is this (update: default the one read).",
            int,
            None,
        )

        def add(ctx: click.Context, client: PolicyClient, given: dict[str, Any]) -> None:
            show(ctx, self._method(client, "create")(**_fields(self.add, given)))

        def get(ctx: click.Context, client: PolicyClient, given: dict[str, Any]) -> None:
            show(ctx, self._method(client, "get")(**_fields(self.keys, given)))

        def listing(ctx: click.Context, client: PolicyClient, given: dict[str, Any]) -> None:
            show_list(ctx, self._method(client, "list")(**_fields(self.filters, given)), title=title)

        def update(ctx: click.Context, client: PolicyClient, given: dict[str, Any]) -> None:
            current = self._method(client, "get")(**_fields(self.keys, given))
            apply_changes(current, _fields(self.changes, given))
            expected = given["expected_revision"]
            request = {
                self.noun: current,
                "expected_revision": current.revision if expected is None else expected,
            }
            show(ctx, self._method(client, "update")(**request))

        def remove(ctx: click.Context, client: PolicyClient, given: dict[str, Any]) -> None:
            keys = _fields(self.keys, given)
            show(
                ctx, self._method(client, "delete")(**keys, expected_revision=given["expected_revision"] or 0)
            )

        _command(group, "add", f"Create a {one} ({self.cmdlet}).", self.add, add)
        _command(group, "get", f"One {one}.", self.keys, get)
        _command(group, "list", f"Every {one}, page after page.", self.filters, listing)
        changing = [*self.keys, *self.changes, guard]
        _command(group, "update", f"Change the options given of a {one}; the rest stays.", changing, update)
        _command(group, "remove", f"Delete a {one}.", [*self.keys, guard], remove)
