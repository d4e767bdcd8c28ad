"""No input makes the ``overland`` CLI print a traceback.

Every command of the command tree (enumerated from the CLI app itself, so a new command is covered
without touching this test) runs with hypothesis-drawn values for its options and arguments: numbers
out of every range, addresses that are not, missing, unreadable and garbage files, hostile text,
against a service that answers every call with an empty message or with a drawn status. Whatever it
is given, the command exits with a documented code, prints no traceback, and at most a few lines on
stderr.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import typer
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from typer._click import Command, Context, Parameter
from typer._click import types as click_types
from typer._types import TyperChoice
from typer.core import TyperArgument, TyperGroup, TyperOption
from typer.models import TyperPath
from typer.testing import CliRunner

from overland.cli import app
from overland.cli.params import interval, seconds
from overland.config import Service
from tests.unit.sdk.any_service import AnyService, start_any_service

# docs/cli.md, "Exit codes".
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 8, 130}
MAX_STDERR_LINES = 3


def _leaves(
    group: TyperGroup, ctx: Context, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, TyperGroup):
            yield from _leaves(command, Context(command, parent=ctx, info_name=name), (*path, name))
        else:
            yield (*path, name), command


ROOT = typer.main.get_command(app)
assert isinstance(ROOT, TyperGroup)
COMMANDS = sorted(_leaves(ROOT, Context(ROOT, info_name="overland"), ()), key=lambda leaf: leaf[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths a file option or argument may get: none there, a directory, unreadable, not UTF-8,
    garbage text, an empty file and a good record file."""
    base = tmp_path_factory.mktemp("cli-files")
    (base / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (base / "garbage.jsonl").write_text('{"ca": 1}\nnot json\n[1, 2]\n{"trace_id": 5, "start": "x"}\n')
    (base / "garbage.csv").write_text("ca,vsid\n\x00,zz\n")
    (base / "empty.jsonl").write_text("")
    (base / "good.jsonl").write_text(
        '{"ca": "192.0.2.10", "vsid": 5001, "mac": "02:00:00:00:00:01", "pa": "198.18.0.1"}\n'
    )
    # Mode 0: unreadable, except to root, for whom it is one more small file.
    unreadable = base / "unreadable.jsonl"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    names = ["binary.jsonl", "garbage.jsonl", "garbage.csv", "empty.jsonl", "good.jsonl", "unreadable.jsonl"]
    return {
        "missing": str(base / "missing.jsonl"),
        "directory": str(base),
        **{n: str(base / n) for n in names},
    }


@pytest.fixture(scope="module")
def service() -> Iterator[AnyService]:
    running = start_any_service()
    yield running
    running.stop()


INTS = ["-1", "0", "1", "5001", str(2**24), str(2**31), str(2**32), str(2**63), str(10**20), "1.5", "abc", ""]
SECONDS = ["nan", "inf", "-inf", "-1", "0", "0.01", "0.5", "1e400", "abc", ""]
TEXT = [
    "192.0.2.10",
    "192.0.2.300",
    "192.0.2.0/24",
    "192.0.2.1/33",
    "02:00:00:00:00:01",
    "zz",
    "6f1c1d1e-0000-4000-8000-000000000001",
    "web=/tmp/disk.vhd",
    "127.0.0.1:1",
    "",
    "-",
    "\x00",
    "a" * 5000,
]


def _values(param: Parameter, files: dict[str, str]) -> st.SearchStrategy[str]:
    kind = param.type
    if isinstance(kind, TyperChoice):
        return st.sampled_from([*map(str, kind.choices), "bogus", ""])
    if isinstance(kind, click_types.FloatParamType) or getattr(kind, "func", None) in (seconds, interval):
        return st.sampled_from(SECONDS)
    if isinstance(kind, click_types.IntParamType):
        return st.sampled_from(INTS)
    paths = st.sampled_from(sorted(files.values()))
    if isinstance(kind, TyperPath):
        return paths
    return st.one_of(st.sampled_from(TEXT), paths, st.text(max_size=30))


@st.composite
def invocations(draw: st.DrawFn, files: dict[str, str]) -> tuple[list[str], list[str]]:
    """The arguments of one run: root options, then a command with drawn options and arguments."""
    path, command = draw(st.sampled_from(COMMANDS))
    args: list[str] = []
    for param in ROOT.params:
        if isinstance(param, TyperOption) and draw(st.integers(0, 3)) == 0:
            args += [param.opts[0]] if param.is_flag else [param.opts[0], draw(_values(param, files))]
    args += list(path[:1])
    args += list(path[1:])
    for param in command.params:
        if isinstance(param, TyperArgument):
            if param.required or draw(st.booleans()):
                args.append(draw(_values(param, files)))
            continue
        assert isinstance(param, TyperOption)
        if not (param.required or draw(st.booleans())):
            continue
        if param.is_flag:
            args.append(draw(st.sampled_from(param.opts + param.secondary_opts)))
            continue
        for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
            args += [param.opts[0], draw(_values(param, files))]
    return list(path), args


ANSWERS = [
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
]


def _runs_until_interrupted(args: list[str]) -> bool:
    """``replica status --watch`` without a positive --count refreshes until Ctrl-C, and ``vm console
    --follow`` prints until the VM is off (which the fake service never says), by design."""
    if "console" in args and {"--follow", "-f"} & set(args):
        return True
    if "--watch" not in args:
        return False
    counts = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--count"]
    return not counts or counts[-1] in ("0", "")


def test_the_command_tree_is_enumerated_from_the_app() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {
        "policy lookup-record add",
        "policy bulk-load",
        "policy check",
        "vswitch attach",
        "trace list",
    } <= names
    assert len(names) > 40


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(st.data())
def test_no_input_makes_the_cli_print_a_traceback(
    service: AnyService, files: dict[str, str], data: st.DataObject
) -> None:
    path, args = data.draw(invocations(files))
    assume(not _runs_until_interrupted(args))
    answer = data.draw(st.sampled_from(ANSWERS))
    streaming = path[-1] in ("watch", "bulk-load") or args[-1:] == ["--watch"]
    # A stream that keeps failing with UNAVAILABLE is resumed until its (unbounded) stream deadline.
    assume(not (streaming and answer == grpc.StatusCode.UNAVAILABLE))
    service.answer.code = answer
    service.answer.message = data.draw(st.sampled_from(["", "bad\nthing", "x" * 3000]))
    env = {api.env_var: service.address for api in Service}
    env |= {"OVERLAND_TIMEOUT": "0.5", "OVERLAND_SPAN_FILE": files["garbage.jsonl"]}
    result = CliRunner().invoke(app, args, env=env, input="not,a\ncsv\n")
    shown = f"overland {' '.join(map(repr, args))}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{shown} raised {result.exception!r}") from result.exception
    event(f"exit {result.exit_code}")
    assert result.exit_code in DOCUMENTED_EXIT_CODES, f"{shown}: exit {result.exit_code}"
    assert "Traceback" not in result.stderr, shown
    assert len(result.stderr.splitlines()) <= MAX_STDERR_LINES, f"{shown}:\n{result.stderr}"


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "bulk-load", "\x00"],
        ["--tls-cert", "empty.jsonl", "--tls-key", "good.jsonl", "policy", "status"],
        ["policy", "lookup-record", "get", "--vsid", str(10**20), "--ca", "192.0.2.10"],
        ["--timeout", "nan", "policy", "status"],
        ["vm", "console", "web", "--offset", "-1"],
        ["vm", "stop", "web", "--timeout", "-1"],
        ["vm", "new", "web", "--disk", "d0=disk.vhd", "--nic", "ca=\ud800"],
        ["vm", "new", "web", "--disk", "d0=disk.vhd", "--nic", f"vsid={2**32}"],
    ],
)
def test_inputs_that_once_crashed_the_cli(
    service: AnyService, files: dict[str, str], args: list[str]
) -> None:
    """What the property above found, kept as examples (a NUL in a file name; an empty client
    certificate, on which grpc's C core aborted the process; numbers out of their protobuf field's
    range; a lone surrogate, which protobuf cannot encode)."""
    args = [files.get(arg, arg) for arg in args]
    service.answer.code = grpc.StatusCode.OK
    env = {api.env_var: service.address for api in Service} | {"OVERLAND_TIMEOUT": "0.5"}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("overland: ")
    assert len(result.stderr.splitlines()) == 1
