"""One budget for the whole Ray Serve app: two router replicas under a burst, and restarts.

The expert is the real knn-vote expert (no LLM: the app starts in seconds); the detector (in its
own ``SmallDetector`` deployment here, so that path is served too) and policy are the tuned
SpamAssassin artifact. The threshold barely moves (learning rate 1e-9), so
every uncertain mail wants the expert and only the hard cap limits deferrals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from cascade.config import CascadeConfig
from serving import (AUTHORIZED, CONTROL_TOKEN, KeptDeferred, cascade_config, free_port, served_app,
                     spam_kept_and_deferred, tune_artifact)

pytestmark = pytest.mark.integration

WINDOW, HARD_CAP, LEASE = 200, 0.1, 4


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> CascadeConfig:
    artifact = tmp_path_factory.mktemp("artifact") / "spam"
    tune_artifact(artifact)
    token_file = tmp_path_factory.mktemp("secrets") / "control-token"
    token_file.write_text(CONTROL_TOKEN)
    return cascade_config(
        artifact,
        budget={"target": 0.1, "hard_cap": HARD_CAP, "window": WINDOW, "learning_rate": 1e-9},
        serve={"port": free_port(), "router_replicas": 2, "small_tier": "deployment", "router_num_cpus": 0.1,
               "detector_num_cpus": 0.1,
               "expert_num_cpus": 0.1, "control": {"token_file": str(token_file)},
               "shared_budget": {"lease_deferrals": LEASE, "lease_ttl_s": 2.0},
               # a burst of uncertain mails is not the certified traffic: the monitors would rightly put the
               # certificate in doubt (test_serve_monitor_integration.py); here only the hard cap is under test
               "monitor": {"enabled": False}},
    )


@pytest.fixture(scope="module")
def url(config: CascadeConfig) -> Iterator[str]:
    with served_app(config) as app_url:
        yield app_url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60.0, headers=AUTHORIZED) as client:
        yield client


@pytest.fixture(scope="module")
def kept_and_deferred(config: CascadeConfig, spamassassin: Any) -> KeptDeferred:
    return spam_kept_and_deferred(config, spamassassin)


def _kill(deployment: str) -> None:
    import ray

    replica = next(actor for actor in ray.util.list_named_actors(all_namespaces=True)
                   if deployment in actor["name"] and actor["name"].startswith("SERVE_REPLICA"))
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)


def _budget_after_restart(http: httpx.Client, before: int) -> dict[str, Any]:
    """GET /v1/budget until a replaced replica answers (503s and refused connections meanwhile)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            response = http.get("/v1/budget")
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200 and response.json()["observed"] >= before:
            return response.json()
        time.sleep(0.5)
    raise AssertionError("the budget did not come back within 120 s")


def _settled_budget(http: httpx.Client) -> dict[str, Any]:
    """The budget once the routers' last per-batch reports have reached the holder (two equal reads)."""
    previous = http.get("/v1/budget").json()
    for _ in range(50):
        time.sleep(0.2)
        current = http.get("/v1/budget").json()
        if current == previous:
            return current
        previous = current
    raise AssertionError("the budget kept changing with no traffic")


def test_the_hard_cap_holds_over_both_router_replicas_under_a_burst(
        http: httpx.Client, kept_and_deferred: KeptDeferred) -> None:
    deferred = kept_and_deferred[1]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(
            lambda i: http.post("/v1/detect", json={"samples": [{"text": deferred[i % len(deferred)]}]}),
            range(WINDOW)))
    assert all(r.status_code == 200 for r in responses)
    by_expert = sum(r.json()["answered_by"]["expert"] for r in responses)
    budget = http.get("/v1/budget").json()
    assert budget["replicas"] == 2 and budget["observed"] == WINDOW
    assert by_expert <= HARD_CAP * WINDOW  # one cap for the app: each replica alone would allow this much
    assert by_expert >= HARD_CAP * WINDOW - 2 * 2 * LEASE  # and the room is used, less what leases still hold
    verdicts = [r.json()["verdicts"][0] for r in responses]
    forced = [v for v in verdicts if v["source"] == "small"]   # every one of these mails is deferred by the rule
    assert all(v["forced"] and v["degraded"] for v in forced)  # none accepted silently
    settled = _settled_budget(http)
    assert settled["forced_total"] == settled["forced_in_window"] == len(forced) == WINDOW - by_expert
    assert settled["guarantee"]["status"] == "defers-less"  # a rate bound carries over to fewer deferrals


def test_a_restarted_holder_and_router_keep_target_threshold_and_window(
        http: httpx.Client, kept_and_deferred: KeptDeferred) -> None:
    changed = http.put("/v1/budget", json={"target": 0.05})
    assert changed.status_code == 200 and changed.json()["target"] == 0.05
    for text in kept_and_deferred[0][:20]:
        http.post("/v1/detect", json={"samples": [{"text": text}]})
    before = _settled_budget(http)
    _kill("BudgetHolder")
    after_holder = _budget_after_restart(http, before["observed"])
    _kill("CascadeRouter")
    after_router = _budget_after_restart(http, before["observed"])
    for after in (after_holder, after_router):
        assert after["target"] == 0.05 and after["threshold"] == before["threshold"]
        assert after["observed"] == before["observed"] and after["realised_rate"] == before["realised_rate"]
