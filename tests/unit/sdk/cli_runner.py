"""Running the ``overland`` CLI in-process (typer's CliRunner) with its endpoints in the environment."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import TypeVar

import grpc
from typer.testing import CliRunner

from overland.cli import app

_runner = CliRunner()
Servicer = TypeVar("Servicer")


@contextmanager
def serving(add: Callable[[Servicer, grpc.Server], None], servicer: Servicer) -> Iterator[str]:
    """``servicer`` on a real gRPC server (``add`` is the generated ``add_...Servicer_to_server``);
    yields its ``host:port``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``overland ARGS``; an exception other than exit is re-raised."""
    result = _runner.invoke(app, list(args), env={"OVERLAND_TIMEOUT": "10", **env})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def invoke_json(env: dict[str, str], *args: str) -> object:
    """``overland --json ARGS``, which must succeed, parsed."""
    code, out, err = invoke(env, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def seed_tenant(env: dict[str, str], tenant: str, vsid: int, pa: str) -> str:
    """A routing domain, a subnet of 192.0.2.0/24 and a provider address, made with the CLI; the RDID."""
    domain = invoke_json(env, "policy", "routing-domain", "add", "--tenant", tenant)
    assert isinstance(domain, dict)
    rdid = str(domain["rdid"])
    invoke_json(
        env, "policy", "subnet", "add", "--vsid", str(vsid), "--rdid", rdid, "--prefix", "192.0.2.0/24"
    )
    invoke_json(
        env,
        "policy",
        "provider-address",
        "add",
        "--host",
        f"host-{tenant}",
        "--pa",
        pa,
        "--prefix-length",
        "16",
    )
    return rdid
