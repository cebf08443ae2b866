"""Failing fast and guarding the app in-process: the expert's breaker, readiness, the control token,
body limits on chunked bodies, an overloaded expert (real tuned artifact, real knn-vote expert)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cascade.config import CascadeConfig, ConfigError, ControlConfig
from cascade.experts import ExpertUnavailable
from cascade.types import Sample
from deployments.breaker import CircuitBreaker
from deployments.control import ControlAccess
from deployments.http import build_http_app
from deployments.contracts import ExpertOverloaded
from serving import AUTHORIZED, CONTROL_TOKEN, KeptDeferred, Tiers, client, detect, in_process_app, in_process_service


class CountingExpert:
    """The real knn-vote expert behind a switch: ``mode`` 'ok' answers, 'down' fails (a connection
    error), 'gone' fails as the router's handle does when the replica died, 'overloaded' is a full
    queue; every call is counted."""

    def __init__(self, expert: Any) -> None:
        self._expert = expert
        self.label_names = expert.label_names
        self.mode = "ok"
        self.calls = 0

    async def ajudge(self, X: Any) -> Any:
        self.calls += 1
        if self.mode == "down":
            raise ConnectionError("expert replica died")
        if self.mode == "gone":
            raise ExpertUnavailable("the expert replica is gone (ActorDiedError)")
        if self.mode == "overloaded":
            raise ExpertOverloaded("queue full")
        return await self._expert.ajudge(X)

    async def aexplain(self, *args: Any, **kwargs: Any) -> Any:
        return await self._expert.aexplain(*args, **kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def expert(knn_expert: Any) -> CountingExpert:
    return CountingExpert(knn_expert)


@pytest.fixture(scope="module")
def shared_api(config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> TestClient:
    """One app for tests that leave no state behind (refused requests)."""
    return client(in_process_app(config, knn_expert, tiers))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guarded(config: CascadeConfig, expert: CountingExpert, tiers: Tiers, clock: Clock) -> TestClient:
    """The app with a breaker that opens after 2 failures, for 30 s of the test's clock."""
    breaker = CircuitBreaker(failures=2, cooldown_s=30.0, clock=clock)
    return client(in_process_app(config, expert, tiers, breaker=breaker))


def test_an_open_breaker_answers_deferred_samples_without_asking_the_expert(
        guarded: TestClient, expert: CountingExpert, kept_and_deferred: KeptDeferred) -> None:
    expert.mode = "down"
    for _ in range(2):
        detect(guarded, kept_and_deferred[1][:1])
    assert expert.calls == 2
    verdicts = detect(guarded, kept_and_deferred[1][:3]).json()["verdicts"]
    assert expert.calls == 2  # refused at the breaker: nothing waited for the expert
    assert all(v["source"] == "small" and v["degraded"] for v in verdicts)
    assert guarded.get("/readyz").json()["breaker"] == "open"


def test_after_the_cooldown_one_probe_goes_through_and_closes_the_breaker(
        guarded: TestClient, expert: CountingExpert, clock: Clock, kept_and_deferred: KeptDeferred) -> None:
    expert.mode = "down"
    for _ in range(2):
        detect(guarded, kept_and_deferred[1][:1])
    expert.mode = "ok"
    clock.now += 30.0
    verdicts = detect(guarded, kept_and_deferred[1][:2]).json()["verdicts"]
    assert expert.calls == 3 and all(v["source"] == "expert" for v in verdicts)
    assert guarded.get("/readyz").json() == {"status": "ready", "small": "up", "expert": "up", "breaker": "closed",
                                             "expert_consecutive_failures": 0}


def test_an_overloaded_expert_degrades_the_answer_but_does_not_open_the_breaker(
        guarded: TestClient, expert: CountingExpert, kept_and_deferred: KeptDeferred) -> None:
    expert.mode = "overloaded"
    for _ in range(3):
        verdict = detect(guarded, kept_and_deferred[1][:1]).json()["verdicts"][0]
        assert verdict["degraded"] and verdict["source"] == "small"
    assert expert.calls == 3 and guarded.get("/readyz").json()["breaker"] == "closed"


def test_an_expert_that_is_gone_opens_the_breaker_at_the_first_failure(
        guarded: TestClient, expert: CountingExpert, kept_and_deferred: KeptDeferred) -> None:
    expert.mode = "gone"
    first = detect(guarded, kept_and_deferred[1][:1]).json()["verdicts"][0]
    assert first["degraded"] and expert.calls == 1
    detect(guarded, kept_and_deferred[1][:3])
    assert expert.calls == 1 and guarded.get("/readyz").json()["breaker"] == "open"


class Probe:
    """A tier probe whose answer the test sets: True, False, or an exception to raise."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def __call__(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return bool(self.answer)


def test_readiness_says_loading_then_ready_then_degraded_when_the_expert_goes_down(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> None:
    expert_probe = Probe(TimeoutError("no replica yet"))
    api = client(in_process_app(config, knn_expert, tiers, expert_probe=expert_probe))
    loading = api.get("/readyz")
    assert loading.status_code == 503 and loading.headers["retry-after"] == "1"
    assert loading.json()["status"] == "not_ready" and loading.json()["expert"] == "loading"
    alive = api.get("/healthz")
    assert alive.status_code == 200 and alive.json()["status"] == "ok"  # liveness is not readiness
    expert_probe.answer = True
    assert api.get("/readyz").json()["status"] == "ready"
    expert_probe.answer = False
    down = api.get("/readyz")
    assert down.status_code == 200 and down.json()["status"] == "degraded" and down.json()["expert"] == "down"


def test_readiness_is_a_503_while_the_small_tier_is_down(config: CascadeConfig, knn_expert: Any,
                                                        tiers: Tiers) -> None:
    from deployments.detector import LocalSmallTier

    class SmallTierDown(LocalSmallTier):
        ready = Probe(ConnectionError("gone"))

    api = client(in_process_app(config, knn_expert, tiers, small_tier=SmallTierDown(tiers[1])))
    response = api.get("/readyz")
    assert response.status_code == 503 and response.json()["small"] == "down"


def test_changing_the_budget_without_a_token_is_401_and_changes_nothing(shared_api: TestClient) -> None:
    before = shared_api.get("/v1/budget").json()["target"]
    response = shared_api.put("/v1/budget", json={"target": 0.3}, headers={"Authorization": ""})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    wrong = shared_api.put("/v1/budget", json={"target": 0.3}, headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401 and "not the control token" in wrong.json()["message"]
    assert shared_api.get("/v1/budget").json()["target"] == before


def test_with_no_token_configured_changes_are_403_unless_allowed_for_local_use(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> None:
    service = in_process_service(config, knn_expert, tiers)
    locked = TestClient(build_http_app(service, config.serve, ControlAccess.from_token(None)))
    refused = locked.put("/v1/budget", json={"target": 0.3}, headers=AUTHORIZED)
    assert refused.status_code == 403 and "allow_unauthenticated" in refused.json()["message"]
    open_locally = ControlAccess.from_token(None, allow_unauthenticated=True)
    local = TestClient(build_http_app(service, config.serve, open_locally))
    assert local.put("/v1/budget", json={"target": 0.3}).json()["target"] == 0.3


def test_the_token_is_read_from_a_file_or_the_named_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text(CONTROL_TOKEN + "\n")
    from_file = ControlAccess.from_config(ControlConfig(token_file=str(secret)))
    monkeypatch.setenv("MY_TOKEN", CONTROL_TOKEN)
    from_env = ControlAccess.from_config(ControlConfig(token_env="MY_TOKEN"))
    assert from_file.refusal(AUTHORIZED["Authorization"]) is None
    assert from_env.refusal(AUTHORIZED["Authorization"]) is None
    assert from_file.refusal("Bearer other") is not None


def test_a_missing_token_file_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="serve.control.token_file"):
        ControlAccess.from_config(ControlConfig(token_file=str(tmp_path / "absent")))


def _chunked(total: int, piece: int = 4096) -> Iterator[bytes]:
    body = b'{"samples": [{"text": "' + b"a" * total + b'"}]}'
    for start in range(0, len(body), piece):
        yield body[start:start + piece]


def test_a_chunked_body_over_the_limit_is_413(shared_api: TestClient) -> None:
    response = shared_api.post("/v1/detect", content=_chunked(400_000),
                               headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over the limit" in response.json()["message"]


def test_a_chunked_body_under_the_limit_is_served(shared_api: TestClient) -> None:
    response = shared_api.post("/v1/detect", content=_chunked(50), headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["verdicts"]) == 1


def test_while_the_expert_is_still_gone_no_request_waits_on_it_after_the_cooldown(
        config: CascadeConfig, expert: CountingExpert, tiers: Tiers, clock: Clock,
        kept_and_deferred: KeptDeferred) -> None:
    """With an expert probe the breaker half-opens only when the background check finds the expert up."""
    readiness = Probe(False)
    breaker = CircuitBreaker(failures=2, cooldown_s=30.0, clock=clock, probed=True)
    service = in_process_service(config, expert, tiers, breaker=breaker, expert_probe=readiness)
    deferred = [Sample(text=text) for text in kept_and_deferred[1][:1]]

    async def detect_then_settle() -> Any:
        answer = await service.detect(deferred)
        await asyncio.gather(*(task for task in asyncio.all_tasks() if task is not asyncio.current_task()))
        return answer.verdicts[0]

    async def scenario() -> list[tuple[int, str, bool]]:
        expert.mode = "gone"
        seen = []
        for advance, up, mode in ((0.0, False, "gone"), (30.0, False, "gone"), (30.0, True, "ok"), (0.0, True, "ok")):
            clock.now += advance
            readiness.answer, expert.mode = up, mode
            verdict = await detect_then_settle()
            seen.append((expert.calls, verdict.source, verdict.degraded))
        return seen

    # tripped by the first call; after a cooldown the check says down: answered degraded, expert not asked;
    # after another the check says up (that request still degraded); the next request is the probe call
    assert asyncio.run(scenario()) == [(1, "small", True), (1, "small", True), (1, "small", True), (2, "expert", False)]
    assert breaker.state == "closed"
