"""The configuration vocabulary every service shares: one error, the server, etcd, log and telemetry
settings, and the command line that fills them.

A service's config embeds these parts. Its ``load_config(argv, env)`` builds a ``CommandLine``, which
gives every service the same flags and environment variables for the same things (``--bind``,
``--tls-*``, ``--etcd*``, ``--log-*``, the telemetry variables; names and defaults from
``overland.defaults``), turns their text into values and validates once: any bad value, from a flag
or the environment, is a ``ConfigError`` naming its field, never a traceback. Flags win over the
environment, the environment over the defaults.

Two rules of docs/security.md live here, checked with the rest at start: nothing listens beyond
loopback in plaintext unless ``--insecure-listen`` says so, and TLS files are read and checked (a
missing or unreadable file, a key that is not the certificate's, a client CA without a server
certificate) before anything listens.

Nothing here imports the gRPC server, etcd or OpenTelemetry: a restarting vswitch agent reads its
configuration before it pays for those.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol, Self, TypeVar

from overland import defaults
from overland.config import TlsFiles
from overland.defaults import ServiceDefaults
from overland.errors import ConfigurationError
from services.common.errors import FieldViolation, InvalidArgument

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The longest etcd deadline a service accepts: a longer one is a typo (minutes for milliseconds).
MAX_ETCD_TIMEOUT_SECONDS = 300.0
# Each stream slot is a thread: past a few thousand, run more processes (``--workers``) instead.
MAX_STREAM_SLOTS = 4096
# What ``main`` returns for a configuration it cannot start with (argparse's usage status too).
EXIT_CONFIG = 2

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class ConfigError(InvalidArgument):
    """A service cannot start with this configuration; ``violations`` name each bad field."""


def check(violations: Sequence[FieldViolation], what: str) -> None:
    """Raise ``ConfigError`` listing every violation, if there is any, for ``what``'s configuration."""
    if violations:
        details = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise ConfigError(f"invalid {what} configuration: {details}", list(violations))


class Validated(Protocol):
    def violations(self) -> list[FieldViolation]: ...


C = TypeVar("C", bound=Validated)


def host_port_violation(value: str, name: str, *, min_port: int = 0) -> list[FieldViolation]:
    """``value`` as ``host:port`` (``[v6]:port`` too), or the violation that says it is not."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not min_port <= int(port) <= 65535:
        return [FieldViolation(name, f"must be host:port with a port in {min_port}..65535, got {value!r}")]
    return []


def is_loopback(host: str) -> bool:
    """Whether ``host`` (of a ``host:port``; ``[v6]`` too) is a loopback address or ``localhost``.
    Any other name counts as beyond loopback: resolving it would be I/O, and it may resolve anywhere."""
    bare = host.strip().removeprefix("[").removesuffix("]")
    if bare.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def tls_file_problems(tls: TlsFiles) -> list[str]:
    """What is wrong with ``tls``'s files, each naming its file: missing, unreadable, not PEM, or a
    key that does not belong to the certificate. Checked with the standard library's TLS, so a
    service finds out at start instead of at its first handshake."""
    try:
        tls.validate()
    except ConfigurationError as error:
        return [error.message]
    problems = []
    for name, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if path is None:
            continue
        try:
            path.read_bytes()
        except OSError as error:
            problems.append(f"cannot read the TLS {name} file {path}: {error.strerror or error}")
    if problems:
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.cert is not None and tls.key is not None:
        try:
            # An encrypted key gets an empty password instead of a prompt on the terminal.
            context.load_cert_chain(tls.cert, tls.key, password=lambda: b"")
        except ssl.SSLError as error:
            if "KEY_VALUES_MISMATCH" in str(error):
                problems.append(f"the TLS key {tls.key} is not the key of the certificate {tls.cert}")
            else:
                problems.append(
                    f"cannot load the TLS certificate {tls.cert} with the key {tls.key}: "
                    f"{error.reason or error} (PEM files, the key unencrypted)"
                )
    if tls.ca is not None:
        try:
            context.load_verify_locations(cafile=tls.ca)
        except ssl.SSLError as error:
            problems.append(f"the TLS ca file {tls.ca} holds no PEM certificate: {error.reason or error}")
    return problems


def _tls_violations(tls: TlsFiles | None, name: str, *, identity: bool) -> list[FieldViolation]:
    """``identity``: the certificate and key are required (a server's)."""
    if tls is None:
        return []
    if identity and (tls.cert is None or tls.key is None):
        if tls.ca is not None and tls.cert is None and tls.key is None:
            # Serving plaintext here would silently drop the client authentication asked for.
            message = "a client CA (--tls-client-ca) needs the server's certificate and key (--tls-cert, "
            return [FieldViolation(name, message + "--tls-key); refusing to serve without TLS")]
        return [FieldViolation(name, "needs a certificate and its key (--tls-cert, --tls-key)")]
    return [FieldViolation(name, problem) for problem in tls_file_problems(tls)]


def seconds_violation(value: float, name: str, *, zero: bool = False) -> list[FieldViolation]:
    """The violation of a duration that is not a finite positive (with ``zero``: non-negative) number."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        return [FieldViolation(name, f"must be a {'non-negative' if zero else 'positive'} number of seconds")]
    return []


@dataclass(frozen=True)
class ServerConfig:
    """Where and how a service listens. ``bind`` port 0 picks a free port (tests use it)."""

    bind: str = "127.0.0.1:0"
    # Threads for unary calls; streaming calls have their own ``stream_slots`` threads on top, and
    # the stream past them is refused with RESOURCE_EXHAUSTED (docs/servers.md).
    max_workers: int = 32
    stream_slots: int = defaults.STREAM_SLOTS
    grace_seconds: float = 5.0
    # ``cert``/``key``: the server's; with ``ca`` set, clients must present a certificate it signed.
    tls: TlsFiles | None = None
    # SO_REUSEPORT: several processes serve one port (the kernel spreads connections); off, a second
    # server on a taken port fails to start instead.
    reuse_port: bool = False
    # Serve plaintext beyond loopback anyway (--insecure-listen): anyone who reaches the port calls
    # the API unauthenticated and unencrypted.
    insecure_listen: bool = False

    def violations(self, prefix: str = "server") -> list[FieldViolation]:
        found = host_port_violation(self.bind, f"{prefix}.bind")
        if not found and self.tls is None:
            found += plaintext_listen_violation(self.bind, f"{prefix}.bind", self.insecure_listen)
        if self.max_workers < 1:
            found.append(FieldViolation(f"{prefix}.max_workers", "at least 1"))
        if not 1 <= self.stream_slots <= MAX_STREAM_SLOTS:
            found.append(FieldViolation(f"{prefix}.stream_slots", f"1 to {MAX_STREAM_SLOTS}"))
        found += seconds_violation(self.grace_seconds, f"{prefix}.grace_seconds", zero=True)
        found += _tls_violations(self.tls, f"{prefix}.tls", identity=True)
        return found

    def validate(self) -> Self:
        check(self.violations(), "server")
        return self


def plaintext_listen_violation(bind: str, name: str, allowed: bool, what: str = "") -> list[FieldViolation]:
    """The violation of listening on ``bind`` (host:port) in plaintext, unless it is loopback or
    ``allowed`` (--insecure-listen)."""
    host = bind.rpartition(":")[0]
    if allowed or is_loopback(host):
        return []
    message = f"{bind} is beyond loopback and {what or 'has no TLS (--tls-cert, --tls-key)'}"
    return [FieldViolation(name, f"{message}: refusing to listen in plaintext without --insecure-listen")]


def parse_endpoint(endpoint: str) -> str:
    """``host:port`` from ``host:port``, ``http://host:port`` or ``https://host:port``."""
    target = endpoint.strip()
    for scheme in ("http://", "https://"):
        target = target.removeprefix(scheme)
    target = target.rstrip("/")
    if host_port_violation(target, "endpoint", min_port=1):
        raise ConfigError(f"etcd endpoint must be host:port, got {endpoint!r}")
    return target


@dataclass(frozen=True)
class EtcdCredentials:
    """An etcd user and its password (never printed: ``repr`` leaves it out)."""

    user: str
    password: str = field(repr=False)

    def violations(self, prefix: str = "etcd.credentials") -> list[FieldViolation]:
        found = []
        if not self.user:
            found.append(
                FieldViolation(prefix, f"a password needs its user (--etcd-user, {defaults.ETCD_USER_ENV})")
            )
        elif not self.password:
            where = f"--etcd-password-file or {defaults.ETCD_PASSWORD_ENV}"
            found.append(FieldViolation(prefix, f"user {self.user!r} needs its password ({where})"))
        return found


@dataclass(frozen=True)
class EtcdConfig:
    """How a service reaches etcd. ``timeout`` is the deadline of every call, in seconds: past it a
    request fails UNAVAILABLE. ``watch_idle_timeout``, when set, declares a watch broken after that
    long without any response (set it above etcd's progress-notify interval)."""

    endpoints: tuple[str, ...] = (defaults.ETCD_ENDPOINT,)
    timeout: float = defaults.ETCD_TIMEOUT_SECONDS
    max_txn_ops: int = 128
    # Client TLS to etcd: ``ca`` verifies the server; ``cert``/``key`` authenticate this client.
    tls: TlsFiles | None = None
    watch_idle_timeout: float | None = None
    # The etcd user calls authenticate as (docs/security.md: one user per service role); None sends
    # no password (an etcd without auth, or one that takes the client certificate's CN as the user).
    credentials: EtcdCredentials | None = None

    def violations(self, prefix: str = "etcd") -> list[FieldViolation]:
        found = []
        if not self.endpoints:
            found.append(FieldViolation(f"{prefix}.endpoints", "at least one etcd endpoint"))
        for endpoint in self.endpoints:
            try:
                parse_endpoint(endpoint)
            except ConfigError as error:
                found.append(FieldViolation(f"{prefix}.endpoints", error.message))
        found += seconds_violation(self.timeout, f"{prefix}.timeout")
        if self.timeout > MAX_ETCD_TIMEOUT_SECONDS:
            found.append(FieldViolation(f"{prefix}.timeout", f"at most {MAX_ETCD_TIMEOUT_SECONDS:g} seconds"))
        if self.max_txn_ops < 1:
            found.append(FieldViolation(f"{prefix}.max_txn_ops", "at least 1"))
        if self.watch_idle_timeout is not None:
            found += seconds_violation(self.watch_idle_timeout, f"{prefix}.watch_idle_timeout")
        found += _tls_violations(self.tls, f"{prefix}.tls", identity=False)
        if self.credentials is not None:
            found += self.credentials.violations(f"{prefix}.credentials")
            if self.tls is None and not found:
                beyond = [e for e in self.endpoints if not is_loopback(parse_endpoint(e).rpartition(":")[0])]
                if beyond:
                    message = (
                        f"would send the password in plaintext to {beyond[0]}: give etcd's CA (--etcd-ca)"
                    )
                    found.append(FieldViolation(f"{prefix}.credentials", message))
        return found

    def validate(self) -> Self:
        check(self.violations(), "etcd")
        return self


@dataclass(frozen=True)
class LogConfig:
    """How a service logs: its level, and JSON lines (for log shippers) instead of key=value text."""

    level: str = "INFO"
    json: bool = False

    def violations(self, prefix: str = "log") -> list[FieldViolation]:
        if self.level.upper() not in LOG_LEVELS:
            return [FieldViolation(f"{prefix}.level", f"one of {', '.join(LOG_LEVELS)}, got {self.level!r}")]
        return []


@dataclass(frozen=True)
class TelemetryConfig:
    """Where a service's spans and metrics go: OTLP when ``otlp_endpoint`` is set, else JSON-lines
    files; exporting nowhere (the default) runs the service untraced."""

    service_name: str
    service_instance: str = ""
    span_file: str = ""
    otlp_endpoint: str = ""
    # Export spans as they end instead of in batches (tests that read the span file at once).
    synchronous: bool = False
    metric_interval_seconds: float = 10.0
    metric_file: str = ""
    # host:port serving the metrics in the Prometheus format (empty: not served; port 0: any free
    # port). HTTPS with ``metrics_tls`` (the service's server TLS: with its client CA, scrapers need a
    # certificate of it); plaintext beyond loopback only with ``insecure_listen`` (--insecure-listen,
    # the gRPC port's flag).
    metrics_listen: str = ""
    metrics_tls: TlsFiles | None = None
    insecure_listen: bool = False

    @property
    def enabled(self) -> bool:
        """Whether spans or metrics go anywhere: without an endpoint, a file or a metrics listener a
        service runs untraced."""
        return bool(self.otlp_endpoint or self.span_file or self.metric_file or self.metrics_listen)

    def violations(self, prefix: str = "telemetry") -> list[FieldViolation]:
        found = []
        if not self.service_name:
            found.append(FieldViolation(f"{prefix}.service_name", "required"))
        found += seconds_violation(self.metric_interval_seconds, f"{prefix}.metric_interval_seconds")
        if self.metrics_listen:
            name = f"{prefix}.metrics_listen"
            bad = host_port_violation(self.metrics_listen, name)
            if not bad and self.metrics_tls is None:
                what = "would serve metrics over plain HTTP (no --tls-cert, --tls-key)"
                bad = plaintext_listen_violation(self.metrics_listen, name, self.insecure_listen, what)
            found += bad
        if self.metrics_tls is not None and (self.metrics_tls.cert is None or self.metrics_tls.key is None):
            found.append(FieldViolation(f"{prefix}.metrics_tls", "needs the server's certificate and key"))
        return found

    def validate(self) -> Self:
        check(self.violations(), "telemetry")
        return self


def telemetry_from_env(
    env: Mapping[str, str], service_name: str, service_instance: str = "", *, strict: bool = False
) -> TelemetryConfig:
    """The telemetry the standard OTel variables and ``OVERLAND_SPAN_FILE``/``OVERLAND_METRIC_FILE``
    ask for. A bad metric interval is ignored unless ``strict`` (then it is a ``ConfigError``)."""
    interval = 10.0
    raw = env.get(defaults.METRIC_INTERVAL_ENV, "")
    if raw:
        try:
            # The standard variable is in milliseconds.
            interval = float(raw) / 1000
        except ValueError:
            if strict:
                message = f"{defaults.METRIC_INTERVAL_ENV} must be milliseconds, got {raw!r}"
                check([FieldViolation("telemetry.metric_interval_seconds", message)], "telemetry")
    return TelemetryConfig(
        service_name,
        service_instance=service_instance,
        span_file=env.get(defaults.SPAN_FILE_ENV, ""),
        otlp_endpoint=env.get(defaults.OTLP_ENDPOINT_ENV, ""),
        metric_interval_seconds=interval,
        metric_file=env.get(defaults.METRIC_FILE_ENV, ""),
    )


class _Parser(argparse.ArgumentParser):
    """Usage errors (an unknown flag, a missing value) are ``ConfigError``, like bad values."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}", [FieldViolation("arguments", message)])


@dataclass
class _Switch:
    variable: str | None
    field: str


class CommandLine:
    """One service's command line: options that default to environment variables, and the conversion
    of their text into values, each bad one a violation naming its field. ``finish`` validates the
    config built from them and raises one ``ConfigError`` listing everything wrong."""

    def __init__(
        self,
        service: ServiceDefaults | None,
        description: str,
        env: Mapping[str, str] | None = None,
        *,
        prog: str = "",
    ):
        # None: a tool that shares the etcd options but serves nothing (services.common.etcd_auth).
        self.service = service
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.violations: list[FieldViolation] = []
        name = prog or f"python -m services.{service.name if service else ''}"
        # No abbreviations: --etcd-password must not quietly mean --etcd-password-file.
        self.parser = _Parser(prog=name, description=description, allow_abbrev=False)
        self._switches: dict[str, _Switch] = {}
        # What ``parse`` read: the parts built from several options' values (telemetry) look here.
        self.args = argparse.Namespace()

    # -- options ---------------------------------------------------------------------------------------

    def option(self, flag: str, variable: str | None, default: str, help: str, **kwargs: Any) -> None:
        """``flag``, defaulting to ``variable`` (unset or empty: ``default``)."""
        value = (self.env.get(variable) if variable else None) or default
        where = f"env {variable}, " if variable else ""
        self.parser.add_argument(flag, default=value, help=f"{help} [{where}default {default!r}]", **kwargs)

    def switch(self, flag: str, variable: str | None, name: str, help: str) -> None:
        """An on/off flag; off, ``variable`` (1/true/yes/on or 0/false/no/off) decides."""
        where = f" [env {variable}=1]" if variable else ""
        self.parser.add_argument(flag, action="store_true", default=None, help=help + where)
        self._switches[flag.lstrip("-").replace("-", "_")] = _Switch(variable, name)

    def add_server_options(self) -> None:
        service = self.service
        assert service is not None, "only a service listens"
        self.option("--bind", service.bind_env, service.address, "host:port to listen on (port 0: any)")
        self.option("--tls-cert", service.tls_cert_env, "", "server certificate (enables TLS)")
        self.option("--tls-key", service.tls_key_env, "", "its private key")
        self.option(
            "--tls-client-ca", service.tls_client_ca_env, "", "require client certificates of this CA"
        )
        self.switch(
            "--insecure-listen",
            service.insecure_listen_env,
            "server.insecure_listen",
            "listen beyond loopback without TLS (anyone reaching the port calls the API)",
        )
        self.option(
            "--stream-slots",
            defaults.STREAM_SLOTS_ENV,
            str(defaults.STREAM_SLOTS),
            "streaming calls served at once (each on a thread of its own); the next is refused",
        )
        self.option(
            "--metrics-listen",
            service.metrics_listen_env,
            "",
            f"host:port serving Prometheus metrics (HTTPS with --tls-cert), e.g. {service.metrics_address}",
        )

    def add_etcd_options(self) -> None:
        self.option("--etcd", defaults.ETCD_ENDPOINTS_ENV, defaults.ETCD_ENDPOINT, "etcd host:port[,...]")
        timeout = f"{defaults.ETCD_TIMEOUT_SECONDS:g}"
        self.option("--etcd-timeout", defaults.ETCD_TIMEOUT_ENV, timeout, "deadline of every etcd call, s")
        self.option("--etcd-ca", defaults.ETCD_CA_ENV, "", "CA that signed etcd's certificate (TLS)")
        self.option("--etcd-cert", defaults.ETCD_CERT_ENV, "", "client certificate for etcd")
        self.option("--etcd-key", defaults.ETCD_KEY_ENV, "", "its private key")
        self.option("--etcd-user", defaults.ETCD_USER_ENV, "", "etcd user to authenticate as")
        self.option(
            "--etcd-password-file",
            defaults.ETCD_PASSWORD_FILE_ENV,
            "",
            f"file holding its password (or env {defaults.ETCD_PASSWORD_ENV}; never a flag)",
        )

    def add_log_options(self) -> None:
        self.option("--log-level", defaults.LOG_LEVEL_ENV, "INFO", f"one of {', '.join(LOG_LEVELS)}")
        self.switch("--log-json", defaults.LOG_JSON_ENV, "log.json", "log JSON lines")

    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        args = self.parser.parse_args(argv)
        for dest, switch in self._switches.items():
            if not getattr(args, dest):
                raw = self.env.get(switch.variable, "") if switch.variable else ""
                setattr(args, dest, self.boolean(raw, switch.field))
        self.args = args
        return args

    # -- values --------------------------------------------------------------------------------------

    def _convert(self, text: str, name: str, convert: Callable[[str], Any], what: str) -> Any:
        try:
            return convert(text.strip())
        except (ValueError, OverflowError):
            self.violations.append(FieldViolation(name, f"{what}, got {text!r}"))
            return None

    def seconds(self, text: str, name: str) -> float:
        """A finite number (the config's checks say which are allowed); a bad one is 0."""
        value = self._convert(text, name, float, "must be a number of seconds")
        if value is not None and not math.isfinite(value):
            self.violations.append(FieldViolation(name, f"must be a finite number of seconds, got {text!r}"))
            value = None
        return 0.0 if value is None else float(value)

    def integer(self, text: str, name: str) -> int:
        """A whole number; a bad one is 0 (the field's violation says why)."""
        value = self._convert(text, name, _whole_number, "must be a whole number")
        return 0 if value is None else int(value)

    def boolean(self, text: str, name: str) -> bool:
        lowered = text.strip().lower()
        if lowered not in _TRUE + _FALSE:
            self.violations.append(FieldViolation(name, f"must be 1 or 0 (true/false), got {text!r}"))
        return lowered in _TRUE

    @staticmethod
    def path(text: str) -> Path | None:
        return Path(text) if text else None

    @staticmethod
    def comma_list(text: str) -> tuple[str, ...]:
        """``a, b,c`` as ``("a", "b", "c")``; empty items are dropped."""
        return tuple(part.strip() for part in text.split(",") if part.strip())

    def tls(self, ca: str, cert: str, key: str) -> TlsFiles | None:
        """TLS files when any path is given (validation says which is missing)."""
        if not (ca or cert or key):
            return None
        return TlsFiles(ca=self.path(ca), cert=self.path(cert), key=self.path(key))

    # -- the shared parts ------------------------------------------------------------------------------

    def server(self, args: argparse.Namespace, **fields: Any) -> ServerConfig:
        tls = self.tls(args.tls_client_ca, args.tls_cert, args.tls_key)
        slots = self.integer(args.stream_slots, "server.stream_slots")
        return ServerConfig(
            bind=args.bind.strip(),
            tls=tls,
            stream_slots=slots,
            insecure_listen=args.insecure_listen,
            **fields,
        )

    def etcd(self, args: argparse.Namespace, **fields: Any) -> EtcdConfig:
        return EtcdConfig(
            endpoints=self.comma_list(args.etcd),
            timeout=self.seconds(args.etcd_timeout, "etcd.timeout"),
            tls=self.tls(args.etcd_ca, args.etcd_cert, args.etcd_key),
            credentials=self.etcd_credentials(args.etcd_user.strip(), args.etcd_password_file),
            **fields,
        )

    def etcd_credentials(self, user: str, password_file: str) -> EtcdCredentials | None:
        """The user and its password, read from ``password_file`` or the environment now (a file
        that cannot be read is a violation naming it); None when neither a user nor a password is
        given."""
        password = self.env.get(defaults.ETCD_PASSWORD_ENV, "")
        if password_file:
            if password:
                message = f"give the password in a file or in {defaults.ETCD_PASSWORD_ENV}, not both"
                self.violations.append(FieldViolation("etcd.password_file", message))
            try:
                # One line; the newline an editor or `echo` leaves is not part of it. Bytes, not
                # text mode: its newline translation would turn a "\r" inside the password into "\n".
                password = Path(password_file).read_bytes().decode().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or str(error)
                self.violations.append(
                    FieldViolation("etcd.password_file", f"cannot read {password_file}: {reason}")
                )
                return None
            if not password:
                self.violations.append(FieldViolation("etcd.password_file", f"{password_file} is empty"))
                return None
        if not (user or password):
            return None
        return EtcdCredentials(user, password)

    def log(self, args: argparse.Namespace) -> LogConfig:
        return LogConfig(level=args.log_level.strip().upper(), json=args.log_json)

    def telemetry(self, service_name: str, service_instance: str = "") -> TelemetryConfig:
        """The telemetry variables' settings and, for a service that listens, its metrics endpoint
        (served with the server's TLS files and under its --insecure-listen)."""
        try:
            config = telemetry_from_env(self.env, service_name, service_instance, strict=True)
        except ConfigError as error:
            self.violations += error.violations
            config = telemetry_from_env({}, service_name, service_instance)
        args = self.args
        listen = getattr(args, "metrics_listen", "").strip()
        if not listen:
            return config
        tls = (
            self.tls(args.tls_client_ca, args.tls_cert, args.tls_key)
            if args.tls_cert and args.tls_key
            else None
        )
        return replace(config, metrics_listen=listen, metrics_tls=tls, insecure_listen=args.insecure_listen)

    def finish(self, config: C, what: str) -> C:
        """``config``, or ``ConfigError`` listing the bad values read and what ``config`` finds wrong
        (a field already reported as unreadable is not reported twice)."""
        unreadable = {v.field for v in self.violations}
        check([*self.violations, *(v for v in config.violations() if v.field not in unreadable)], what)
        return config


def _whole_number(text: str) -> int:
    # int() would take "1_000" and " 7": flags and variables are plain digits.
    if not text.isdigit() or not text.isascii():
        raise ValueError(text)
    return int(text)


def report(error: ConfigError, prog: str) -> int:
    """What ``main`` does with a configuration it cannot start with: one line on stderr, exit 2."""
    message = error.message.replace("\n", "\\n")
    sys.stderr.write(f"{prog}: {message}\n")
    return EXIT_CONFIG
