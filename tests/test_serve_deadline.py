"""Per-request deadlines through the real HTTP app (in-process, real artifact, the real knn-vote expert
behind an event the test controls): an expert answer that cannot arrive in time is not waited for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cascade.config import CascadeConfig
from deployments.deadline import DEADLINE_HEADER, ExpertLatency, parse_deadline_header
from serving import CONTROL_TOKEN, KeptDeferred, Tiers, client, in_process_app, in_process_service


class HeldExpert:
    """The real expert, whose answers wait until the test releases them (or forever)."""

    def __init__(self, expert: Any) -> None:
        self.expert = expert
        self.release: asyncio.Event | None = None
        self.calls = 0

    async def ajudge(self, X: Any) -> Any:
        self.calls += 1
        if self.release is not None:
            await self.release.wait()
        return await self.expert.ajudge(X)

    async def aexplain(self, *args: Any, **kwargs: Any) -> Any:
        return await self.expert.aexplain(*args, **kwargs)


def answer(api: TestClient, texts: list[str], **headers: str) -> Any:
    response = api.post("/v1/detect", json={"samples": [{"text": t} for t in texts]}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_expert_that_would_miss_the_deadline_leaves_the_small_verdict_flagged(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    _, deferred = kept_and_deferred
    held = HeldExpert(knn_expert)
    api = client(in_process_app(config, held, tiers))
    held.release = asyncio.Event()  # never set: the expert never answers
    body = answer(api, deferred[:2], **{DEADLINE_HEADER: "150"})
    assert [v["source"] for v in body["verdicts"]] == ["small", "small"]
    assert all(v["degraded"] and v["degraded_reason"] == "deadline" for v in body["verdicts"])
    assert body["verdicts"][0]["latency_ms"]["total"] < 20_000  # the expert's own timeout (20 s) was not waited out
    assert api.get("/readyz").json()["breaker"] == "closed"  # a missed deadline is no expert failure


def test_with_time_left_the_expert_answers_and_without_a_deadline_nothing_changes(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    _, deferred = kept_and_deferred
    api = client(in_process_app(config, HeldExpert(knn_expert), tiers))
    generous = answer(api, deferred[:2], **{DEADLINE_HEADER: "60000"})
    assert [v["source"] for v in generous["verdicts"]] == ["expert", "expert"]
    assert all(v["degraded_reason"] is None for v in generous["verdicts"])
    plain = answer(api, deferred[:2])
    assert [v["source"] for v in plain["verdicts"]] == ["expert", "expert"]


def test_a_config_deadline_applies_and_the_header_overrides_it(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    _, deferred = kept_and_deferred
    strict = config.model_copy(update={"serve": config.serve.model_copy(update={"deadline_ms": 100.0})})
    held = HeldExpert(knn_expert)
    api = client(in_process_app(strict, held, tiers))
    held.release = asyncio.Event()
    assert answer(api, deferred[:1])["verdicts"][0]["degraded_reason"] == "deadline"
    held.release = None
    assert answer(api, deferred[:1], **{DEADLINE_HEADER: "60000"})["verdicts"][0]["source"] == "expert"


def test_once_the_expert_is_known_slow_a_short_deadline_skips_it_without_calling(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    from deployments.control import ControlAccess
    from deployments.http import build_http_app

    _, deferred = kept_and_deferred
    held = HeldExpert(knn_expert)
    service = in_process_service(config, held, tiers)
    api = client(build_http_app(service, config.serve, ControlAccess.from_token(CONTROL_TOKEN)))
    answer(api, deferred[:1])
    calls = held.calls
    now = [0.0]
    service.expert_calls.latency = slow = ExpertLatency(stale_s=10.0, clock=lambda: now[0])
    slow.observe(5_000.0)  # the expert took 5 s lately
    body = answer(api, deferred[:1], **{DEADLINE_HEADER: "1000"})
    assert body["verdicts"][0]["degraded_reason"] == "deadline" and held.calls == calls  # not even called
    assert answer(api, deferred[:1], **{DEADLINE_HEADER: "30000"})["verdicts"][0]["source"] == "expert"
    slow.observe(5_000.0)
    now[0] = 11.0  # no answer for longer than stale_s: the next one tries the expert again
    assert answer(api, deferred[:1], **{DEADLINE_HEADER: "1000"})["verdicts"][0]["source"] == "expert"


@pytest.mark.parametrize("value, problem", [("soon", "number"), ("0", "(0,"), ("-5", "(0,"), ("inf", "(0,"),
                                            ("1e12", "(0,")])
def test_a_bad_deadline_header_is_a_422_naming_it(value, problem, config, knn_expert, tiers, texts) -> None:
    api = client(in_process_app(config, knn_expert, tiers))
    response = api.post("/v1/detect", json={"samples": [{"text": texts[0]}]}, headers={DEADLINE_HEADER: value})
    assert response.status_code == 422 and DEADLINE_HEADER in response.json()["message"]
    assert problem in response.json()["message"]
    with pytest.raises(ValueError, match=DEADLINE_HEADER):
        parse_deadline_header(value)
