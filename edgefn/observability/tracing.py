"""Spans exported with the OpenTelemetry SDK over OTLP/HTTP: the core.tracing.Tracer the node uses when asked.

Off unless `[tracing] otlp_endpoint` (or $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or $OTEL_EXPORTER_OTLP_ENDPOINT +
/v1/traces) names a collector. A BatchSpanProcessor exports from its own thread, so a request only pays for
making its spans. The exporter reads $OTEL_EXPORTER_OTLP_HEADERS for a collector that wants a key.
"""

from __future__ import annotations

import os
from typing import Any

from ..core.app import TracingSettings
from ..core.tracing import UNTRACED, Span, TraceContext, Tracer

__all__ = ["OtlpTracer", "endpoint_of", "open_tracer"]

#: how often the batch processor sends (ms): spans show up in the collector within about this
EXPORT_DELAY_MS = 500


def endpoint_of(settings: TracingSettings, environ: dict[str, str] | None = None) -> str | None:
    """The traces endpoint in force: the manifest's, else the standard OpenTelemetry variables', else None (off)."""
    env = os.environ if environ is None else environ
    if settings.otlp_endpoint:
        return settings.otlp_endpoint
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return None


def open_tracer(settings: TracingSettings, version: str = "") -> Tracer:
    """An OtlpTracer when an endpoint is configured, else core.tracing.UNTRACED (contexts still propagate)."""
    endpoint = endpoint_of(settings)
    return OtlpTracer(endpoint, settings.service_name or "edgefn", settings.sample_ratio, version) if endpoint else UNTRACED


class _OtelSpan:
    __slots__ = ("_span", "context")

    def __init__(self, span: Any, context: TraceContext) -> None:
        self._span = span
        self.context = context

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def fail(self, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_status(Status(StatusCode.ERROR, message))

    def end(self) -> None:
        self._span.end()


class OtlpTracer:
    """core.tracing.Tracer on an OpenTelemetry TracerProvider of its own (not the process-global one)."""

    exporting = True

    def __init__(self, endpoint: str, service_name: str, sample_ratio: float = 1.0, version: str = "") -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        self.endpoint = endpoint
        self._trace = trace
        self._kinds = {"server": trace.SpanKind.SERVER, "client": trace.SpanKind.CLIENT, "consumer": trace.SpanKind.CONSUMER,
                       "internal": trace.SpanKind.INTERNAL}
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": version, "telemetry.sdk.name": "opentelemetry"}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10), schedule_delay_millis=EXPORT_DELAY_MS))
        self._tracer = self._provider.get_tracer("edgefn", version)

    def span(self, name: str, parent: TraceContext | None, kind: str = "internal", attributes: dict[str, Any] | None = None) -> Span:
        trace = self._trace
        context = None
        if parent is not None:
            flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if parent.sampled else trace.TraceFlags.DEFAULT)
            context = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(parent.trace_id, parent.span_id, True, flags)))
        span = self._tracer.start_span(name, context=context, kind=self._kinds.get(kind, trace.SpanKind.INTERNAL), attributes=attributes)
        sc = span.get_span_context()
        return _OtelSpan(span, TraceContext(sc.trace_id, sc.span_id, sc.trace_flags.sampled))

    def close(self) -> None:
        """Send what is left and stop the export thread."""
        self._provider.shutdown()
