"""OpenTelemetry traces of the cascade (``serve.tracing``; off by default).

Each detect request is one span (``cascade.detect``, kind SERVER), a child of the client's W3C
``traceparent`` when it sends one, with a child span per tier it went through: ``cascade.small_tier``
(the small tier on the request's batch), ``cascade.policy`` (the deferral rule and the budget) and,
for deferred samples, ``cascade.expert``. Attributes: tier, deferral scores, threshold, certificate
id, how many samples were deferred, degraded and why. The ``traceparent`` of the expert span travels
with the expert call (:func:`current_trace_headers`), so an external OpenAI-compatible expert server
joins the trace.

Spans are exported in batches off the request path to an OTLP/HTTP collector or appended as JSON
lines to a file; each router replica has its own tracer provider.

>>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
>>> exporter = InMemorySpanExporter()
>>> tracer = tracer_with(exporter)
>>> with tracer.start_as_current_span("cascade.detect"):
...     "traceparent" in current_trace_headers()
True
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cascade.trace_context import carried, carrying, released

__all__ = ["JsonLinesExporter", "RequestTrace", "carrying", "current_trace_headers", "extract", "released",
           "shutdown", "tracer_for", "tracer_with"]



def tracer_for(settings: Any, name: str = "cascade") -> Any:
    """The tracer ``serve.tracing`` describes (``None`` when tracing is off)."""
    if not settings.enabled:
        return None
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter(endpoint=settings.endpoint)
    else:
        exporter = JsonLinesExporter(settings.file)
    return tracer_with(exporter, settings.service_name, settings.sample_ratio, batch=True)


def tracer_with(exporter: Any, service_name: str = "cascade", sample_ratio: float = 1.0, batch: bool = False) -> Any:
    """A tracer of its own provider (the process-wide one is left alone) exporting to ``exporter``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("cascade")
    tracer.cascade_provider = provider  # flushed by shutdown(tracer)
    return tracer


def shutdown(tracer: Any) -> None:
    """Export what waits and stop the tracer's provider (a router replica going away)."""
    provider = getattr(tracer, "cascade_provider", None)
    if provider is not None:
        provider.shutdown()


def extract(headers: Mapping[str, str]) -> Any:
    """The client's trace context from its ``traceparent`` / ``tracestate`` headers (empty if none)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier=dict(headers))


def current_trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the expert call under way, or of the span current here."""
    if carried():
        return carried()
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def epoch_ns(perf: float) -> int:
    """A ``time.perf_counter()`` reading as Unix nanoseconds (span timestamps)."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


class RequestTrace:
    """The spans of one request, recorded after the fact from the service's timings."""

    def __init__(self, tracer: Any, context: Any, started: float) -> None:
        from opentelemetry.trace import SpanKind

        self.tracer = tracer
        self.span = tracer.start_span("cascade.detect", context=context, kind=SpanKind.SERVER,
                                      start_time=epoch_ns(started))
        from opentelemetry import trace

        self.context = trace.set_span_in_context(self.span)

    def tiers(self, triage: Any, certificate_id: str | None) -> None:
        """The small-tier and policy spans of the request's batch."""
        scores = [float(x) for x in triage.scores]
        self.child("cascade.small_tier", triage.started, triage.small_ms, {"cascade.tier": "small",
                                                                          "cascade.samples": len(scores)})
        policy_start = triage.started + triage.small_ms / 1000.0
        self.child("cascade.policy", policy_start, triage.policy_ms, {
            "cascade.deferral_scores": scores, "cascade.threshold": float(triage.thresholds[0]) if scores else None,
            "cascade.deferred": int(triage.defer.sum()), "cascade.forced": int(triage.forced.sum()),
            "cascade.certificate_id": certificate_id})

    def expert_span(self, deferred: int) -> Any:
        return self.open_child("cascade.expert", {"cascade.tier": "expert", "cascade.samples": deferred})

    def child(self, name: str, start: float, duration_ms: float, attributes: dict[str, Any]) -> None:
        """A finished child span from ``start`` (perf_counter) lasting ``duration_ms``."""
        begin = epoch_ns(start)
        span = self.tracer.start_span(name, context=self.context, start_time=begin, attributes=_clean(attributes))
        span.end(end_time=begin + int(duration_ms * 1e6))

    def open_child(self, name: str, attributes: dict[str, Any]) -> Any:
        """A child span that is running now (the expert call); end it with ``.end()``."""
        return self.tracer.start_span(name, context=self.context, attributes=_clean(attributes))

    def headers_of(self, span: Any) -> dict[str, str]:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    def end(self, attributes: dict[str, Any]) -> None:
        self.span.set_attributes(_clean(attributes))
        self.span.end()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes str, bool, int, float and sequences of one of them; ``None`` is left out."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, Sequence) and not isinstance(value, str):
            value = [float(v) if isinstance(v, float) else v for v in value]
        out[key] = value
    return out


class JsonLinesExporter:
    """A span exporter appending one JSON object per span to ``path`` (for runs without a collector)."""

    def __init__(self, path: str | Path | None) -> None:
        if path is None:
            raise ValueError("serve.tracing.file: the file exporter needs a path")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps({"name": s.name, "trace_id": f"{s.context.trace_id:032x}",
                             "span_id": f"{s.context.span_id:016x}",
                             "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                             "start_ns": s.start_time, "end_ns": s.end_time,
                             "attributes": dict(s.attributes or {})}) for s in spans]
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
