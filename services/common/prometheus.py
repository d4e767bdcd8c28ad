"""A service's OpenTelemetry metrics served in the Prometheus text format on an HTTP endpoint.

Each service has its own endpoint and its own ``CollectorRegistry`` (never prometheus_client's global
one), so several services in one process (``make run``, tests) each serve exactly their own metrics,
with no name colliding. The endpoint serves HTTPS with the service's TLS files when it has them (and
then, with a client CA, asks scrapers for a certificate of that CA, like the gRPC port); the
configuration decides where plaintext may listen (``TelemetryConfig.violations``).

Prometheus sees OpenTelemetry's names with dots as underscores and the unit as a suffix
(``overland.replica.last_sync.age``, unit ``s`` -> ``overland_replica_last_sync_age_seconds``;
counters end in ``_total``; docs/telemetry.md has the table).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry, start_http_server

from overland.config import TlsFiles
from services.common.errors import InvalidArgument


class MetricsEndpoint:
    """The reader to give the service's ``MeterProvider`` and, once ``start``-ed, the HTTP server that
    a scrape makes read it. ``close`` stops the server."""

    def __init__(self, listen: str, tls: TlsFiles | None = None):
        self.listen = listen
        self._tls = tls
        self.registry = CollectorRegistry(auto_describe=False)
        self.reader = PrometheusMetricReader(registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    @property
    def port(self) -> int:
        """The port it serves on (the one chosen when ``listen`` asked for port 0)."""
        return int(self._server.server_port) if self._server is not None else 0

    @property
    def url(self) -> str:
        host = self.listen.rpartition(":")[0]
        return f"{self.scheme}://{host}:{self.port}/metrics"

    def start(self) -> None:
        host, _sep, port = self.listen.rpartition(":")
        tls = self._tls
        try:
            self._server, self._thread = start_http_server(
                int(port),
                addr=host.removeprefix("[").removesuffix("]"),
                registry=self.registry,
                certfile=str(tls.cert) if tls is not None and tls.cert else None,
                keyfile=str(tls.key) if tls is not None and tls.key else None,
                client_cafile=str(tls.ca) if tls is not None and tls.ca else None,
                client_auth_required=tls is not None and tls.ca is not None,
            )
        except OSError as error:
            raise InvalidArgument(
                f"cannot serve metrics on {self.listen}: {error.strerror or error}"
            ) from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
