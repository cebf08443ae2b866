"""OpenTelemetry traces through the real HTTP app (in-process, real artifact, real knn-vote expert),
recorded with the SDK's in-memory exporter; the JSON-lines file exporter; the config checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cascade.config import CascadeConfig, ServeConfig
from deployments.control import ControlAccess
from deployments.http import build_http_app
from deployments.tracing import JsonLinesExporter, current_trace_headers, shutdown, tracer_for, tracer_with
from policies.watch import certificate_id
from serving import CONTROL_TOKEN, KeptDeferred, Tiers, client, in_process_service

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"


class HeaderSeeingExpert:
    """The real expert; notes the trace headers an outgoing expert call would carry."""

    def __init__(self, expert: Any) -> None:
        self.expert = expert
        self.seen: list[dict[str, str]] = []

    async def ajudge(self, X: Any) -> Any:
        self.seen.append(current_trace_headers())
        return await self.expert.ajudge(X)

    async def aexplain(self, *args: Any, **kwargs: Any) -> Any:
        return await self.expert.aexplain(*args, **kwargs)


def traced_app(config: CascadeConfig, expert: Any, tiers: Tiers, exporter: Any) -> Any:
    service = in_process_service(config, expert, tiers, tracer=tracer_with(exporter))
    return client(build_http_app(service, config.serve, ControlAccess.from_token(CONTROL_TOKEN)))


def test_a_request_is_a_span_under_the_clients_trace_with_a_child_per_tier(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    kept, deferred = kept_and_deferred
    exporter, expert = InMemorySpanExporter(), HeaderSeeingExpert(knn_expert)
    api = traced_app(config, expert, tiers, exporter)
    body = {"samples": [{"text": kept[0]}, {"text": deferred[0]}]}
    verdicts = api.post("/v1/detect", json=body, headers={"traceparent": TRACEPARENT}).json()["verdicts"]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"cascade.detect", "cascade.small_tier", "cascade.policy", "cascade.expert"}
    request = spans["cascade.detect"]
    assert f"{request.context.trace_id:032x}" == CLIENT_TRACE and request.parent.span_id == 0xb7ad6b7169203331
    for name in ("cascade.small_tier", "cascade.policy", "cascade.expert"):
        assert spans[name].parent.span_id == request.context.span_id
        assert request.start_time <= spans[name].start_time <= spans[name].end_time <= request.end_time
    policy = spans["cascade.policy"].attributes
    assert list(policy["cascade.deferral_scores"]) == [v["deferral_score"] for v in verdicts]
    assert policy["cascade.threshold"] == verdicts[0]["threshold"] and policy["cascade.deferred"] == 1
    assert policy["cascade.certificate_id"] == certificate_id(tiers[0].certificate)
    assert request.attributes["cascade.samples"] == 2 and request.attributes["cascade.deferred"] == 1
    assert spans["cascade.expert"].attributes["cascade.degraded_reason"] == ""
    expert_span = spans["cascade.expert"].context  # the expert call carries the expert span's traceparent
    assert expert.seen == [{"traceparent": f"00-{CLIENT_TRACE}-{expert_span.span_id:016x}-01"}]


def test_without_a_client_trace_a_new_one_starts_and_nothing_is_deferred_no_expert_span(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    kept, _ = kept_and_deferred
    exporter = InMemorySpanExporter()
    api = traced_app(config, knn_expert, tiers, exporter)
    assert api.post("/v1/detect", json={"samples": [{"text": kept[0]}]}).status_code == 200
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["cascade.detect", "cascade.policy", "cascade.small_tier"]
    assert next(s for s in spans if s.name == "cascade.detect").parent is None


def test_the_file_exporter_writes_one_json_line_per_span(tmp_path: Path) -> None:
    settings = ServeConfig.model_validate({"tracing": {"enabled": True, "exporter": "file",
                                                       "file": str(tmp_path / "spans.jsonl")}}).tracing
    tracer = tracer_for(settings)
    with tracer.start_as_current_span("outer"):
        with tracer.start_as_current_span("inner", attributes={"cascade.tier": "small"}):
            pass
    shutdown(tracer)  # the batch processor exports off the request path: what waits goes now
    lines = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    by_name = {line["name"]: line for line in lines}
    assert by_name["inner"]["parent_id"] == by_name["outer"]["span_id"]
    assert by_name["inner"]["attributes"] == {"cascade.tier": "small"}
    assert tracer_for(ServeConfig().tracing) is None  # off by default
    with pytest.raises(ValueError, match="tracing.file"):
        ServeConfig.model_validate({"tracing": {"enabled": True, "exporter": "file"}})
    with pytest.raises(ValueError, match="path"):
        JsonLinesExporter(None)
