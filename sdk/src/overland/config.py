"""Client configuration: where each service is, TLS files, the default deadline and the retry policy.

Built from arguments or from the environment (``ClientConfig.from_env``) and validated once, when it is
built, so that a typo in an endpoint or a missing certificate fails before any call is made.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from overland import defaults
from overland.defaults import MAX_MESSAGE_BYTES
from overland.errors import ConfigurationError
from overland.retry import RetryPolicy

DEFAULT_TIMEOUT = defaults.CLIENT_TIMEOUT_SECONDS
DEFAULT_PAGE_SIZE = 500


class Service(enum.Enum):
    """The three APIs, with the environment variable and default address of each (overland.defaults:
    where the services listen when told nothing)."""

    POLICY = defaults.POLICY
    VSWITCH = defaults.VSWITCH
    REPLICA = defaults.REPLICA

    @property
    def env_var(self) -> str:
        return self.value.endpoint_env

    @property
    def default_address(self) -> str:
        return self.value.address


@dataclass(frozen=True)
class TlsFiles:
    """TLS for a client: ``ca`` verifies the server; ``cert`` and ``key`` together enable mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # Checks the server certificate against this name instead of the address's host.
    server_name: str | None = None

    def validate(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigurationError("mutual TLS needs both a client certificate and its key")
        for name, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if path is not None and not path.is_file():
                raise ConfigurationError(f"TLS {name} file not found: {path}")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(name: str, path: Path | None) -> bytes | None:
            # grpc's C core aborts the process on an empty client certificate or key, and takes
            # anything else without a word until a connection fails: a file that holds no PEM block
            # is a configuration error naming it.
            if path is None:
                return None
            try:
                data = path.read_bytes()
            except OSError as error:
                raise ConfigurationError(f"TLS {name} file {path}: {error.strerror or error}") from None
            if b"-----BEGIN " not in data:
                raise ConfigurationError(f"TLS {name} file {path} holds no PEM block")
            return data

        return grpc.ssl_channel_credentials(
            root_certificates=read("ca", self.ca),
            private_key=read("key", self.key),
            certificate_chain=read("cert", self.cert),
        )


KEEPALIVE_MS = 10_000


@dataclass(frozen=True)
class Endpoint:
    """One service's address (``host:port``, ``[v6]:port``, or ``unix:/path``) and its TLS, if any."""

    address: str
    tls: TlsFiles | None = None

    def validate(self) -> None:
        if self.address.startswith(("unix:", "unix-abstract:")):
            return
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"endpoint must be host:port, got {self.address!r}")
        if self.tls is not None:
            self.tls.validate()

    def channel_arguments(self) -> list[tuple[str, int | str]]:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Calls without a deadline (a cycle's progress, an import, an export) notice a dead service
            # by keepalive pings rather than never; the services accept pings every 4 s and more.
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_MS),
        ]
        if self.tls is not None and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return options

    def channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.address, options=self.channel_arguments())
        return grpc.secure_channel(self.address, self.tls.credentials(), options=self.channel_arguments())

    def aio_channel(self, interceptors: Sequence[Any] = ()) -> grpc.aio.Channel:
        chain = list(interceptors) or None
        options = self.channel_arguments()
        if self.tls is None:
            return grpc.aio.insecure_channel(self.address, options=options, interceptors=chain)
        return grpc.aio.secure_channel(
            self.address, self.tls.credentials(), options=options, interceptors=chain
        )


def _default_endpoints() -> dict[Service, Endpoint]:
    return {service: Endpoint(service.default_address) for service in Service}


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs. ``timeout`` is the default deadline of every call, in seconds.

    ``stream_timeout`` bounds long-lived streams (``watch_table``); None lets them run until closed.
    """

    endpoints: Mapping[Service, Endpoint] = field(default_factory=_default_endpoints)
    timeout: float = DEFAULT_TIMEOUT
    stream_timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    page_size: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.stream_timeout is not None and not self.stream_timeout > 0:
            raise ConfigurationError("stream_timeout must be positive")
        if not 1 <= self.page_size <= 1000:
            raise ConfigurationError("page_size must be within 1..1000")
        self.retry.validate()
        for endpoint in self.endpoints.values():
            endpoint.validate()

    def endpoint(self, service: Service) -> Endpoint:
        return self.endpoints.get(service) or Endpoint(service.default_address)

    def with_endpoint(self, service: Service, endpoint: Endpoint | str) -> ClientConfig:
        """A copy with one service's endpoint replaced; a bare address keeps the configured TLS."""
        if isinstance(endpoint, str):
            endpoint = Endpoint(endpoint, self.endpoint(service).tls)
        return replace(self, endpoints={**self.endpoints, service: endpoint})

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        tls: TlsFiles | None = None,
        timeout: float | None = None,
    ) -> ClientConfig:
        """Read ``OVERLAND_*`` variables; explicit arguments win over the environment.

        ``OVERLAND_{POLICY,VSWITCH,REPLICA}_ENDPOINT`` (host:port), ``OVERLAND_TLS_CA``,
        ``OVERLAND_TLS_CERT``, ``OVERLAND_TLS_KEY``, ``OVERLAND_TLS_SERVER_NAME`` and
        ``OVERLAND_TIMEOUT`` (seconds). Change other fields with ``dataclasses.replace``.
        """
        env = os.environ if environ is None else environ
        if tls is None:
            tls = _tls_from_env(env)
        if timeout is None:
            timeout = _float_from_env(env, defaults.TIMEOUT_ENV, DEFAULT_TIMEOUT)
        endpoints = {
            service: Endpoint(env.get(service.env_var) or service.default_address, tls) for service in Service
        }
        return cls(endpoints=endpoints, timeout=timeout)


def _tls_from_env(env: Mapping[str, str]) -> TlsFiles | None:
    names = {"ca": defaults.TLS_CA_ENV, "cert": defaults.TLS_CERT_ENV, "key": defaults.TLS_KEY_ENV}
    paths = {name: env.get(variable) for name, variable in names.items()}
    if not any(paths.values()):
        return None
    return TlsFiles(
        **{name: Path(value) if value else None for name, value in paths.items()},
        server_name=env.get(defaults.TLS_SERVER_NAME_ENV) or None,
    )


def _float_from_env(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
