"""An in-process OTLP/gRPC trace receiver built from the opentelemetry-proto service definitions.

Tests point ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or a ``TelemetryConfig.otlp_endpoint``) at it and read
back every span the services exported, as the real collector would receive them.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]
    status_code: int
    # The resource's service.instance.id: which site, which host.
    instance: str = ""


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects exported spans; ``wait_for`` polls until a predicate over them holds."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.metrics = _MetricsReceiver()
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self.metrics, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(attrs.get("service.name", "")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                            status_code=span.status.code,
                            instance=str(attrs.get("service.instance.id", "")),
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                got = [(s.service, s.name, s.attributes) for s in spans]
                raise AssertionError(f"spans never matched; got {got}")
            time.sleep(0.1)


class _MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Keeps the names of the metrics each service exported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, set[str]] = {}

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        with self._lock:
            for resource_metrics in request.resource_metrics:
                attrs = {a.key: _value(a.value) for a in resource_metrics.resource.attributes}
                names = self._names.setdefault(str(attrs.get("service.name", "")), set())
                for scope_metrics in resource_metrics.scope_metrics:
                    names.update(m.name for m in scope_metrics.metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def names(self, service: str) -> set[str]:
        with self._lock:
            return set(self._names.get(service, set()))
