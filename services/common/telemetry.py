"""OpenTelemetry for every service: tracer and meter providers, exporters, context in etcd, log correlation.

Each service builds one ``Telemetry`` at start (no globals), so several services in one process
(tests, ``make run``) keep their own ``service.name``. Spans go to OTLP over gRPC when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the standard variables apply), else to a JSON-lines span file
that ``overland trace show TRACE_ID`` prints as a tree. Metrics go to OTLP when the endpoint is set,
and are served to Prometheus scrapes on ``--metrics-listen`` (``services.common.prometheus``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import client_interceptor, filters, server_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, Span, SpanContext, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from overland.v1 import types_pb2
from services.common.config import TelemetryConfig
from services.common.prometheus import MetricsEndpoint

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
# Links kept on one span (the SDK's default limit is 128); the cause count is an attribute.
MAX_LINKS = 64


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per span to a file; several processes may share the file."""

    def __init__(self, path: Path):
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_to_dict(span), separators=(",", ":")) + "\n" for span in spans)
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """The span file's record of one span: ids in W3C hex, times in Unix nanoseconds."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else "",
        "span_id": f"{ctx.span_id:016x}" if ctx else "",
        "parent_span_id": f"{parent.span_id:016x}" if parent else "",
        "name": span.name,
        "kind": span.kind.name if span.kind else "",
        "service": str(span.resource.attributes.get("service.name", "")),
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description or "",
        "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
        "events": [{"name": e.name, "time": e.timestamp} for e in span.events],
    }


def _jsonable(value: object) -> object:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return str(value)


class Telemetry:
    """A service's tracer and meter, and the gRPC interceptors that use them."""

    def __init__(
        self,
        config: TelemetryConfig,
        span_exporters: Sequence[SpanExporter] = (),
        metric_readers: Sequence[MetricReader] = (),
    ):
        attributes = {"service.name": config.service_name}
        if config.service_instance:
            attributes["service.instance.id"] = config.service_instance
        resource = Resource.create(attributes)
        self.config = config
        self.tracer_provider = TracerProvider(resource=resource)
        exporters = list(span_exporters)
        readers = list(metric_readers)
        if config.otlp_endpoint:
            exporters.append(_otlp_span_exporter(config.otlp_endpoint))
            readers.append(
                PeriodicExportingMetricReader(
                    _otlp_metric_exporter(config.otlp_endpoint),
                    export_interval_millis=config.metric_interval_seconds * 1000,
                )
            )
        else:
            if config.span_file:
                exporters.append(JsonLinesSpanExporter(Path(config.span_file)))
            if config.metric_file:
                readers.append(
                    PeriodicExportingMetricReader(
                        _file_metric_exporter(Path(config.metric_file)),
                        export_interval_millis=config.metric_interval_seconds * 1000,
                    )
                )
        # Read by each scrape (the endpoint starts once the meter provider has its reader).
        self.metrics_endpoint: MetricsEndpoint | None = None
        if config.metrics_listen:
            self.metrics_endpoint = MetricsEndpoint(config.metrics_listen, config.metrics_tls)
            readers.append(self.metrics_endpoint.reader)
        for exporter in exporters:
            processor: SpanProcessor = (
                SimpleSpanProcessor(exporter) if config.synchronous else BatchSpanProcessor(exporter)
            )
            self.tracer_provider.add_span_processor(processor)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.tracer: Tracer = self.tracer_provider.get_tracer("overland")
        self.meter: Meter = self.meter_provider.get_meter("overland")
        if self.metrics_endpoint is not None:
            try:
                self.metrics_endpoint.start()
            except BaseException:
                self.shutdown()
                raise

    def server_interceptor(self) -> grpc.ServerInterceptor:
        """Server spans for every RPC except health checks, joined to the caller's W3C trace context."""
        return server_interceptor(
            tracer_provider=self.tracer_provider, filter_=filters.negate(filters.health_check())
        )

    def instrument_channel(self, channel: grpc.Channel) -> grpc.Channel:
        """Client spans for calls on ``channel``, propagating the W3C trace context."""
        interceptor = client_interceptor(
            tracer_provider=self.tracer_provider, filter_=filters.negate(filters.health_check())
        )
        # The OpenTelemetry interceptor is of its own kind: grpc.intercept_channel refuses it.
        intercepted: grpc.Channel = intercept_channel(channel, interceptor)
        return intercepted

    @classmethod
    def start(cls, config: TelemetryConfig) -> Telemetry | None:
        """The service's telemetry, or None when ``config`` exports nowhere (no cost on any path)."""
        config.validate()
        return cls(config) if config.enabled else None

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def tracer_of(telemetry: Telemetry | None) -> Tracer:
    """The tracer to use: the service's, or one that records nothing when it runs untraced."""
    return telemetry.tracer if telemetry is not None else trace.NoOpTracer()


def server_interceptors(telemetry: Telemetry | None) -> list[grpc.ServerInterceptor]:
    """What a service passes to ``build_server(interceptors=...)``."""
    return [telemetry.server_interceptor()] if telemetry is not None else []


def _file_metric_exporter(path: Path) -> ConsoleMetricExporter:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered, so several processes appending to one file interleave whole lines.
    out = path.open("a", encoding="utf-8", buffering=1)
    return ConsoleMetricExporter(out=out, formatter=lambda data: data.to_json(indent=None) + "\n")


def _otlp_insecure(endpoint: str) -> bool | None:
    # The standard rule: an http:// endpoint is plaintext; otherwise the OTEL_EXPORTER_OTLP_INSECURE
    # variable (read by the exporter when this is None) decides.
    return True if endpoint.startswith("http://") else None


def _otlp_span_exporter(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    return OTLPSpanExporter(endpoint=endpoint, insecure=_otlp_insecure(endpoint))


def _otlp_metric_exporter(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter  # noqa: PLC0415

    return OTLPMetricExporter(endpoint=endpoint, insecure=_otlp_insecure(endpoint))


def current_trace_context() -> types_pb2.TraceContext:
    """The active span's W3C context, to store with a record so its appliers can join the trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return types_pb2.TraceContext(
        traceparent=carrier.get("traceparent", ""), tracestate=carrier.get("tracestate", "")
    )


def span_context_of(trace_context: types_pb2.TraceContext) -> SpanContext | None:
    """The remote span context stored with a record, or None when it carries none."""
    if not trace_context.traceparent:
        return None
    carrier = {"traceparent": trace_context.traceparent}
    if trace_context.tracestate:
        carrier["tracestate"] = trace_context.tracestate
    ctx = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None


@contextmanager
def child_or_linked_span(
    tracer: Tracer,
    name: str,
    trace_contexts: Sequence[types_pb2.TraceContext],
    attributes: dict[str, Any] | None = None,
) -> Iterator[Span]:
    """A span for work caused by stored writes: a child of the write when exactly one distinct trace
    caused it, else a new root span linked to every cause (batching makes parenthood wrong)."""
    # A batch of a bulk write carries one context thousands of times: parse each distinct one once.
    distinct = {tc.traceparent: tc for tc in trace_contexts if tc.traceparent}
    remote = {c.trace_id: c for c in (span_context_of(tc) for tc in distinct.values()) if c is not None}
    parent_ctx = None
    links: list[Link] = []
    if len(remote) == 1:
        parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(next(iter(remote.values()))))
    else:
        links = [Link(c) for c in list(remote.values())[:MAX_LINKS]]
    if len(remote) != 1:
        # A root span: say how many writes caused it (the links may be capped).
        attributes = {**(attributes or {}), "overland.causes": len(remote)}
    with tracer.start_as_current_span(name, context=parent_ctx, links=links, attributes=attributes) as span:
        yield span


@contextmanager
def detached_context() -> Iterator[None]:
    """Run with an empty context (background loops must not inherit a request's trace)."""
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


class TraceLogFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` of the active span to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = f"{ctx.trace_id:032x}"
            record.span_id = f"{ctx.span_id:016x}"
        return True


def install_log_correlation() -> None:
    """Attach the trace filter to the root logger's handlers (after ``configure_logging``)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TraceLogFilter) for f in handler.filters):
            handler.addFilter(TraceLogFilter())
