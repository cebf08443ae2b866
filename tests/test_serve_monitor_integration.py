"""The certificate watched in the real Ray Serve app: two router replicas log every decision to one
PostgreSQL database (a real server started for the test, as a cluster would share one), labels come back through POST /v1/feedback, the holder's monitors read them, and a drift
puts the certificate in doubt (fallback to the most conservative certified rule), across a restart.

The budget is an accepted-error certificate (Learn-then-Test) on the tuned SpamAssassin artifact; the
expert is the knn-vote expert (no LLM). Traffic is the test part, which nothing was fitted or
certified on, so before the drift it is exchangeable with the certify part.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from cascade.config import CascadeConfig
from postgres import installed_postgres_server
from serving import AUTHORIZED, CONTROL_TOKEN, cascade_config, free_port, served_app

pytestmark = pytest.mark.integration

FEEDBACK_TOKEN = "integration-feedback-token"
LABELLER = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with installed_postgres_server() as server:
        yield server.fresh_database("cascade_decisions")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, database: str) -> CascadeConfig:
    from policies.tune import tune

    root = tmp_path_factory.mktemp("monitored")
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "control").write_text(CONTROL_TOKEN)
    (secrets / "feedback").write_text(FEEDBACK_TOKEN)
    config = cascade_config(
        root / "artifact", budget={"kind": "accepted-error", "target": 0.1, "delta": 0.1},
        serve={"port": free_port(), "router_replicas": 2, "router_num_cpus": 0.1, "expert_num_cpus": 0.1,
               "control": {"token_file": str(secrets / "control")},
               "feedback": {"token_file": str(secrets / "feedback")},
               "decision_log": {"url": database, "flush_interval_s": 0.1},
               "monitor": {"action": "fallback", "interval_s": 0.2, "settle_s": 0.5}})
    import policies.certify_ledger

    ledger = tmp_path_factory.mktemp("certify-uses-monitored")
    with pytest.MonkeyPatch.context() as patch:  # its own ledger: other modules tune this part with a rate budget
        patch.setattr(policies.certify_ledger, "cache_dir", lambda name: ledger / name)
        tune(config, progress=False)
    return config


@pytest.fixture(scope="module")
def test_part(config: CascadeConfig) -> tuple[list[str], list[str]]:
    """The test part's texts (cut as the requests allow) and their true labels, in a seeded random order
    (the part is stored class by class; a stream of all the ham first is a drift the monitors would see)."""
    from cascade.data.roles import load_roles

    test = load_roles(config).test
    names = list(config.expert.labels)
    order = np.random.default_rng(0).permutation(len(test.y))
    return [test.texts[i][:2000] for i in order], [names[int(test.y[i])] for i in order]


@pytest.fixture(scope="module")
def http(config: CascadeConfig) -> Iterator[httpx.Client]:
    with served_app(config) as url, httpx.Client(base_url=url, timeout=60.0, headers=AUTHORIZED) as client:
        yield client


def serve_and_label(http: httpx.Client, texts: list[str], truth: list[str],
                    label: Callable[[dict[str, Any], str], str]) -> list[dict[str, Any]]:
    """Detect ``texts`` in requests of 8, then send each verdict's label (``label(verdict, truth)``)."""
    verdicts: list[dict[str, Any]] = []
    for start in range(0, len(texts), 8):
        response = http.post("/v1/detect", json={"samples": [{"text": t} for t in texts[start:start + 8]]})
        assert response.status_code == 200, response.text
        verdicts += response.json()["verdicts"]
    items = [{"decision_id": v["decision_id"], "label": label(v, t)} for v, t in zip(verdicts, truth)]
    answer = http.post("/v1/feedback", json={"items": items}, headers=LABELLER)
    assert answer.status_code == 200 and answer.json()["counts"] == {"ok": len(items)}, answer.text
    return verdicts


def watch_until(http: httpx.Client, done: Callable[[dict[str, Any]], bool], timeout_s: float = 120) -> dict[str, Any]:
    """GET /v1/budget until ``done(budget)`` (a replaced holder answers 503 meanwhile)."""
    deadline = time.monotonic() + timeout_s
    budget: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = http.get("/v1/budget")
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            budget = response.json()
            if budget.get("watch") and done(budget):
                return budget
        time.sleep(0.3)
    raise AssertionError(f"the watch did not get there in {timeout_s} s; last state: {budget.get('watch')}")


def test_labels_reach_the_monitors_and_a_drift_puts_the_certificate_in_doubt_across_a_restart(
        http: httpx.Client, test_part: tuple[list[str], list[str]]) -> None:
    texts, truth = test_part
    half = len(texts) // 2
    before = serve_and_label(http, texts[:half], truth[:half], lambda verdict, true: true)
    accepted = sum(not (v["source"] == "expert" or v["forced"] or v["degraded"]) for v in before)
    watching = watch_until(http, lambda b: b["watch"]["monitors"]["accepted_error"]["n"] == accepted
                           and b["watch"]["monitors"]["exchangeability"]["n"] == half)  # no decision lost
    assert watching["watch"]["status"] == "watching" and watching["guarantee"]["status"] == "certified"
    assert watching["certificate_id"] == watching["watch"]["certificate_id"] is not None
    assert all(v["certified"] for v in before if v["source"] == "small")

    # concept drift: what the small tier accepts now counts as the other class
    flip = {"ham": "spam", "spam": "ham"}
    serve_and_label(http, texts[half:], truth[half:], lambda verdict, true: flip[verdict["label"]]
                    if verdict["source"] == "small" else true)
    alarmed = watch_until(http, lambda b: b["watch"]["status"] == "fallback")
    monitor = alarmed["watch"]["monitors"]["accepted_error"]
    assert monitor["alarm"] and monitor["evidence"] >= monitor["alarm_at_evidence"] and monitor["mean"] > 0.1
    lowest = min(t for t, _ in alarmed["certificate"]["passed_rules"])
    assert alarmed["threshold"] == pytest.approx(lowest) and alarmed["guarantee"]["status"] == "in-doubt"
    assert "accepted_error" in alarmed["guarantee"]["statement"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        verdicts = http.post("/v1/detect", json={"samples": [{"text": t} for t in texts[:8]]}).json()["verdicts"]
        if not any(v["certified"] for v in verdicts):
            break
        time.sleep(0.5)
    assert not any(v["certified"] for v in verdicts), verdicts  # routers learn the doubt with their next lease

    import ray

    replica = next(actor for actor in ray.util.list_named_actors(all_namespaces=True)
                   if "BudgetHolder" in actor["name"] and actor["name"].startswith("SERVE_REPLICA"))
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    resumed = watch_until(http, lambda b: b["resumed"] and b["watch"]["monitors"]["accepted_error"]["n"]
                          >= monitor["n"])
    again = resumed["watch"]["monitors"]["accepted_error"]
    assert resumed["watch"]["status"] == "fallback" and again["alarm"] and again["alarm_at"] == monitor["alarm_at"]
    assert resumed["threshold"] == pytest.approx(lowest)
    assert resumed["watch"]["monitors"]["exchangeability"]["n"] >= len(texts)  # replayed from the log
    assert resumed["watch"]["certificate_id"] == watching["watch"]["certificate_id"]
