"""The cascade's HTTP API in-process: a real tuned artifact, the router's service and real experts.

The same FastAPI app runs inside the Ray Serve router; ``test_serve_integration.py`` repeats the
important checks against the real Ray app with vLLM.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cascade.artifact import ArtifactError
from cascade.config import CascadeConfig, ConfigError, ExpertConfig
from cascade.data import Dataset
from deployments.artifact import ServedPolicy, load_served
from deployments.http import build_http_app
from deployments.service import CascadeService, ServiceSettings

LIMITS = {"max_samples_per_request": 8, "max_text_chars": 2000, "max_features": 16}
Tiers = tuple[ServedPolicy, Any]  # the router's share of the artifact, and the small tier
KeptDeferred = tuple[list[str], list[str]]  # texts kept by the small tier, texts deferred


def cascade_config(artifact_dir: Path, **overrides: Any) -> CascadeConfig:
    """SpamAssassin, a few-label TF-IDF detector, confidence policy at a 20% rate, hard cap 50%."""
    raw: dict[str, Any] = {
        "name": "serve-test",
        "artifact_dir": str(artifact_dir),
        "dataset": {"name": "spamassassin", "max_samples": 1500},
        "detector": {"kind": "tfidf-lr", "train_labels": 100},
        "calibrator": {"kind": "platt"},
        "policy": {"kind": "confidence"},
        "budget": {"kind": "rate", "target": 0.2, "hard_cap": 0.5, "window": 200, "learning_rate": 0.05},
        "expert": {"kind": "knn-vote", "shots": 4, "labels": ["ham", "spam"]},
        "cost": {"small_per_call": 0.001, "expert_per_call": 1.0},
        "serve": {**LIMITS, "expert_timeout_s": 20.0},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return CascadeConfig.model_validate(raw)


def tune_artifact(artifact_dir: Path) -> CascadeConfig:
    """Fit the small tier and tune the threshold with ``cascade tune``'s code; return the config."""
    from experiments.tune import tune

    config = cascade_config(artifact_dir)
    tune(config, progress=False)
    return config


def split_by_score(tiers: Tiers, texts: list[str]) -> KeptDeferred:
    """Texts the fitted policy keeps (most confident first) and defers (most uncertain first)
    at its starting threshold."""
    served, small = tiers
    scores = served.policy.score(small.features(texts))
    order = np.argsort(scores)
    return ([texts[i] for i in order if scores[i] <= served.threshold],
            [texts[i] for i in order[::-1] if scores[i] > served.threshold])


def load_tiers(config: CascadeConfig) -> Tiers:
    """The router's share of the artifact and the small tier, as the app loads them."""
    from cascade.small import SmallTier

    served = load_served(config)
    return served, SmallTier.load(served.small_dir)


def in_process_app(config: CascadeConfig, expert: Any, tiers: Tiers) -> FastAPI:
    """The router's FastAPI app (with a fresh controller) with the small tier and ``expert`` in this process."""
    from deployments.detector import score_small

    served, small = tiers

    async def small_tier(X: Any) -> Any:
        return await asyncio.to_thread(score_small, small, X)

    service = CascadeService(ServiceSettings.from_config(config, served), small=small_tier, expert=expert,
                             policy=served.policy, controller=served.controller(config), cost=config.cost)
    return build_http_app(service, config.serve)


def share_after_target(http: Any, texts: list[str], target: float, settled: Callable[[float], bool],
                       rounds: int = 40) -> float:
    """Set the budget target, then send batches of 8 until the expert's share of the last 3 batches
    is ``settled`` (or ``rounds`` batches have gone); return that share."""
    assert http.put("/v1/budget", json={"target": target}).json()["target"] == target
    recent: deque[int] = deque(maxlen=3)
    for i in range(rounds):
        batch = [texts[(8 * i + j) % len(texts)] for j in range(8)]
        recent.append(detect(http, batch).json()["answered_by"]["expert"])
        if len(recent) == 3 and settled(sum(recent) / 24):
            break
    return sum(recent) / 24


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> CascadeConfig:
    return tune_artifact(tmp_path_factory.mktemp("artifact") / "spam")


@pytest.fixture(scope="module")
def tiers(config: CascadeConfig) -> Tiers:
    return load_tiers(config)


@pytest.fixture(scope="module")
def pool(spamassassin: Dataset) -> Dataset:
    return spamassassin.subset(np.arange(0, len(spamassassin), 20))


@pytest.fixture(scope="module")
def texts(spamassassin: Dataset) -> list[str]:
    """200 mails, cut to the app's 2000-character limit."""
    return [spamassassin.texts[i][:2000] for i in range(7, len(spamassassin), 23)][:200]  # type: ignore[index]


@pytest.fixture(scope="module")
def kept_and_deferred(tiers: Tiers, texts: list[str]) -> KeptDeferred:
    kept, deferred = split_by_score(tiers, texts)
    assert len(kept) >= 8 and len(deferred) >= 8
    return kept, deferred


@pytest.fixture(scope="module")
def knn_expert(pool: Dataset) -> Any:
    from cascade.experts import make_expert

    return make_expert(ExpertConfig(kind="knn-vote", shots=4, labels=["ham", "spam"]), pool=pool)


@pytest.fixture
def api(config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> TestClient:
    """A fresh app (fresh controller) whose expert is the no-LLM neighbour vote."""
    return TestClient(in_process_app(config, knn_expert, tiers))


@pytest.fixture(scope="module")
def shared_api(config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> TestClient:
    """One app for tests that leave no state behind (refused requests)."""
    return TestClient(in_process_app(config, knn_expert, tiers))


@pytest.fixture
def api_expert_down(config: CascadeConfig, tiny_llama: Path, tiers: Tiers) -> TestClient:
    """A fresh app whose expert is an OpenAI-compatible server that is not there."""
    from cascade.experts import make_expert

    expert = make_expert(ExpertConfig(kind="openai", base_url=f"http://127.0.0.1:{free_port()}",
                                      model=str(tiny_llama), max_retries=0, timeout_s=2.0, labels=["ham", "spam"]))
    return TestClient(in_process_app(config, expert, tiers))


def detect(api: Any, texts: list[str], prefix: str = "", **body: Any) -> Any:
    """POST the texts to ``{prefix}/v1/detect`` (test client or httpx client); check it answered 200."""
    response = api.post(f"{prefix}/v1/detect", json={"samples": [{"text": t} for t in texts], **body})
    assert response.status_code == 200, response.text
    return response


def _json(body: Any) -> dict[str, Any]:
    return {"json": body}


def _raw(body: str, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


DETECT, BUDGET, EXPLAIN = ("POST", "/v1/detect"), ("PUT", "/v1/budget"), ("POST", "/v1/explain")
OK = {"text": "Meeting moved to 3pm"}
# (name, method, path, request keyword arguments, status, text the message must contain), for an app
# with LIMITS (8 samples, 2000 characters, 16 features) serving text, with a hard cap of 0.5.
BAD_INPUTS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("malformed JSON", *DETECT, _raw('{"samples": ['), 400, "not valid JSON"),
    ("empty body", *DETECT, _raw(""), 400, "JSON object body"),
    ("not JSON", *DETECT, _raw("hello", "text/plain"), 415, "application/json"),
    ("top-level array", *DETECT, _json([OK]), 422, "<body>"),
    ("top-level string", *DETECT, _json("spam"), 422, "<body>"),
    ("no samples field", *DETECT, _json({}), 422, "samples: Field required"),
    ("empty sample list", *DETECT, _json({"samples": []}), 422, "samples: List should have at least 1"),
    ("samples not a list", *DETECT, _json({"samples": "spam"}), 422, "samples"),
    ("sample not an object", *DETECT, _json({"samples": [5]}), 422, "samples.0"),
    ("unknown top-level field", *DETECT, _json({"samples": [OK], "priority": 1}), 422, "priority"),
    ("unknown sample field", *DETECT, _json({"samples": [{**OK, "lang": "en"}]}), 422, "samples.0.lang"),
    ("text not a string", *DETECT, _json({"samples": [{"text": 42}]}), 422, "samples.0.text"),
    ("empty text", *DETECT, _json({"samples": [{"text": ""}]}), 422, "samples.0.text"),
    ("whitespace text", *DETECT, _json({"samples": [{"text": " \n\t"}]}), 422, "only whitespace"),
    ("text too long", *DETECT, _json({"samples": [{"text": "a" * 2001}]}), 413, "samples.0.text"),
    ("too many samples", *DETECT, _json({"samples": [OK] * 9}), 413, "samples: List should have at most 8"),
    ("NaN feature", *DETECT, _raw('{"samples": [{"features": [NaN, 1.0]}]}'), 422, "finite"),
    ("infinite feature", *DETECT, _raw('{"samples": [{"features": [Infinity]}]}'), 422, "finite"),
    ("feature not a number", *DETECT, _json({"samples": [{"features": ["high"]}]}), 422, "samples.0.features.0"),
    ("too many features", *DETECT, _json({"samples": [{"features": [0.5] * 17}]}), 413, "samples.0.features"),
    ("features to a text cascade", *DETECT, _json({"samples": [{"features": [0.1]}]}), 422, "serves text samples"),
    ("image to a text cascade", *DETECT, _json({"samples": [{"image_ref": "a.png"}]}), 422, "serves text samples"),
    ("text and features", *DETECT, _json({"samples": [{**OK, "features": [0.1]}]}), 422, "exactly one"),
    ("no payload", *DETECT, _json({"samples": [{"id": "m1"}]}), 422, "exactly one"),
    ("id too long", *DETECT, _json({"samples": [{**OK, "id": "x" * 300}]}), 413, "samples.0.id"),
    ("rationale not a bool", *DETECT, _json({"samples": [OK], "rationale": "maybe"}), 422, "rationale"),
    ("metadata not an object", *DETECT, _json({"samples": [{**OK, "metadata": [1]}]}), 422, "samples.0.metadata"),
    ("body over the byte limit", *DETECT, _raw("x" * 300_000), 413, "over the limit"),
    ("budget target above 1", *BUDGET, _json({"target": 1.5}), 422, "target"),
    ("budget target negative", *BUDGET, _json({"target": -0.1}), 422, "target"),
    ("budget target not a number", *BUDGET, _json({"target": "high"}), 422, "target"),
    ("budget unknown field", *BUDGET, _json({"target": 0.1, "window": 5}), 422, "window"),
    ("budget target above the hard cap", *BUDGET, _json({"target": 0.8}), 422, "hard cap"),
    ("explain without a sample", *EXPLAIN, _json({"question": "why?"}), 422, "sample"),
    ("explain empty question", *EXPLAIN, _json({"sample": OK, "question": ""}), 422, "question"),
    ("explain history bad role", *EXPLAIN, _json({"sample": OK, "history": [{"role": "bot", "content": "hi"}]}),
     422, "history.0.role"),
    ("wrong method", "GET", "/v1/detect", {}, 405, "GET /v1/detect"),
    ("unknown path", "POST", "/v1/classify", _json({"samples": [OK]}), 404, "/v1/classify"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "needle"),
                         [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_a_4xx_naming_the_problem(shared_api: TestClient, method: str, path: str,
                                                 kwargs: dict[str, Any], status: int, needle: str) -> None:
    response = shared_api.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]


def test_there_are_at_least_twenty_kinds_of_bad_input() -> None:
    assert len({case[0] for case in BAD_INPUTS}) >= 20


def test_a_verdict_carries_label_probability_tier_score_threshold_cost_and_latency(
        api: TestClient, kept_and_deferred: KeptDeferred) -> None:
    response = detect(api, kept_and_deferred[0][:1])
    verdict = response.json()["verdicts"][0]
    assert verdict["label"] in ("ham", "spam") and 0.5 <= verdict["probability"] <= 1
    assert verdict["source"] == "small" and verdict["degraded"] is False
    assert verdict["deferral_score"] <= verdict["threshold"]
    assert verdict["cost"] == pytest.approx(0.001)
    assert set(verdict["latency_ms"]) == {"small", "total"}


def test_confident_samples_never_touch_the_expert(api_expert_down: TestClient,
                                                  kept_and_deferred: KeptDeferred) -> None:
    response = detect(api_expert_down, kept_and_deferred[0][:8])
    body = response.json()
    assert body["answered_by"] == {"small": 8, "expert": 0} and body["degraded"] == 0
    assert response.headers["x-cascade-tier"] == "small"


def test_deferred_samples_are_answered_by_the_expert(api: TestClient,
                                                     kept_and_deferred: KeptDeferred) -> None:
    response = detect(api, kept_and_deferred[1][:1])
    verdict = response.json()["verdicts"][0]
    assert response.headers["x-cascade-tier"] == "expert"
    assert verdict["source"] == "expert" and verdict["deferral_score"] > verdict["threshold"]
    assert "expert" in verdict["latency_ms"] and verdict["prompt_tokens"] == 0


def test_a_mixed_request_keeps_order_and_says_mixed(api: TestClient,
                                                    kept_and_deferred: KeptDeferred) -> None:
    kept, deferred = kept_and_deferred
    samples = [{"id": "k0", "text": kept[0]}, {"id": "d0", "text": deferred[0]}, {"id": "k1", "text": kept[1]}]
    response = api.post("/v1/detect", json={"samples": samples})
    verdicts = response.json()["verdicts"]
    assert [v["id"] for v in verdicts] == ["k0", "d0", "k1"]
    assert [v["source"] for v in verdicts] == ["small", "expert", "small"]
    assert response.headers["x-cascade-tier"] == "mixed"


def test_a_failed_expert_gives_the_small_verdict_flagged_degraded(
        api_expert_down: TestClient, kept_and_deferred: KeptDeferred) -> None:
    response = detect(api_expert_down, kept_and_deferred[1][:3])
    verdicts = response.json()["verdicts"]
    assert response.headers["x-cascade-degraded"] == "3"
    assert all(v["source"] == "small" and v["degraded"] for v in verdicts)


def test_an_expert_timeout_gives_degraded_answers(config: CascadeConfig, knn_expert: Any,
                                                 tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    class SlowExpert:
        """The real control expert, answering 0.5 s late: longer than the router waits."""

        label_names = knn_expert.label_names

        async def ajudge(self, X: Any) -> Any:
            await asyncio.sleep(0.5)
            return await knn_expert.ajudge(X)

        def __getattr__(self, name: str) -> Any:
            return getattr(knn_expert, name)

    impatient = config.model_copy(update={"serve": config.serve.model_copy(update={"expert_timeout_s": 0.05})})
    response = detect(TestClient(in_process_app(impatient, SlowExpert(), tiers)), kept_and_deferred[1][:2])
    assert [v["degraded"] for v in response.json()["verdicts"]] == [True, True]


def test_a_small_tier_that_cannot_answer_is_a_503_not_a_500(config: CascadeConfig, knn_expert: Any,
                                                            tiers: Tiers) -> None:
    served = tiers[0]

    async def unreachable_detector(X: Any) -> Any:
        raise ConnectionError("detector replica is gone")

    service = CascadeService(ServiceSettings.from_config(config, served), small=unreachable_detector,
                             expert=knn_expert, policy=served.policy, controller=served.controller(config),
                             cost=config.cost)
    response = TestClient(build_http_app(service, config.serve)).post("/v1/detect", json={"samples": [OK]})
    assert response.status_code == 503 and "detector replica is gone" in response.json()["message"]


def test_rationale_is_given_for_expert_answers_when_asked(api: TestClient,
                                                          kept_and_deferred: KeptDeferred) -> None:
    kept, deferred = kept_and_deferred
    verdicts = detect(api, [kept[0], deferred[0]], rationale=True).json()["verdicts"]
    assert verdicts[0]["rationale"] is None
    assert "most similar labelled examples" in verdicts[1]["rationale"]


def test_budget_reports_target_realised_rate_and_cap(api: TestClient,
                                                     kept_and_deferred: KeptDeferred) -> None:
    detect(api, kept_and_deferred[1][:2] + kept_and_deferred[0][:6])
    budget = api.get("/v1/budget").json()
    assert budget["target"] == 0.2 and budget["hard_cap"] == 0.5 and budget["window"] == 200
    assert budget["observed"] == 8 and budget["realised_rate"] == pytest.approx(2 / 8)
    assert budget["capped"] is False and budget["certificate"]["kind"] == "rate"


def test_raising_the_target_defers_more_and_lowering_it_defers_less(api: TestClient, texts: list[str]) -> None:
    high = share_after_target(api, texts, 0.5, lambda share: share > 0.3)
    low = share_after_target(api, texts, 0.0, lambda share: share < 0.1)
    assert high > 0.3 and low < 0.1


def test_the_hard_cap_refuses_deferrals_beyond_it(config: CascadeConfig, knn_expert: Any,
                                                  tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    budget = config.budget.model_copy(update={"window": 20, "learning_rate": 1e-9})
    steady = config.model_copy(update={"budget": budget})
    api = TestClient(in_process_app(steady, knn_expert, tiers))
    answered = [detect(api, kept_and_deferred[1][:8]).json()["answered_by"]["expert"] for _ in range(2)]
    budget = api.get("/v1/budget").json()
    assert answered == [8, 2] and budget["capped"] is True and budget["cap_remaining"] == 0


def test_explain_answers_about_a_verdict(api: TestClient, kept_and_deferred: KeptDeferred) -> None:
    verdict = detect(api, kept_and_deferred[1][:1]).json()["verdicts"][0]
    response = api.post("/v1/explain", json={"sample": {"text": kept_and_deferred[1][0]}, "verdict": verdict})
    body = response.json()
    assert response.status_code == 200 and body["degraded"] is False
    assert "most similar labelled examples" in body["answer"] and body["history"][-1]["role"] == "assistant"


def test_explain_with_a_failed_expert_is_degraded_not_an_error(api_expert_down: TestClient) -> None:
    response = api_expert_down.post("/v1/explain", json={"sample": OK, "question": "Why ham?"})
    body = response.json()
    assert response.status_code == 200 and body["degraded"] is True and body["answer"] is None
    assert body["error"].startswith("expert error")


def test_healthz_names_labels_expert_and_request_limit(api: TestClient) -> None:
    body = api.get("/healthz").json()
    assert body == {"status": "ok", "name": "serve-test", "modality": "text", "labels": ["ham", "spam"],
                    "expert": "knn-vote (k=4, no LLM)", "max_samples_per_request": 8}


def test_openapi_documents_every_route_and_the_limits(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/explain", "/v1/budget", "/healthz"} <= set(spec["paths"])
    sample = spec["components"]["schemas"]["DetectSample"]["properties"]["text"]["anyOf"][0]
    assert sample["maxLength"] == 2000
    assert api.get("/docs").status_code == 200


def test_build_app_fails_at_once_on_a_missing_artifact(tmp_path: Path) -> None:
    from deployments.app import build_app

    with pytest.raises(ArtifactError, match="no fitted artifact"):
        build_app(cascade_config(tmp_path / "nothing-here"))


def test_build_app_fails_at_once_on_a_corrupt_artifact(config: CascadeConfig, tmp_path: Path) -> None:
    import shutil

    from deployments.app import build_app

    copy = tmp_path / "copy"
    shutil.copytree(config.artifact_dir, copy)
    (copy / "hop" / "hop.json").write_text('{"threshold": 0.0}')
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        build_app(config.model_copy(update={"artifact_dir": str(copy)}))


def test_deployment_options_come_from_the_serve_config(config: CascadeConfig) -> None:
    from deployments.app import deployment_options

    serve = config.serve.model_copy(update={"detector_replicas": 2, "router_num_cpus": 0.1})
    options = deployment_options(config.model_copy(update={"serve": serve}))
    assert options["detector"]["num_replicas"] == 2
    assert options["router"]["ray_actor_options"]["num_cpus"] == 0.1
    assert options["detector"]["max_ongoing_requests"] == 2 * serve.max_batch_size


def test_the_vllm_expert_replica_gets_the_cpu_engine_settings(config: CascadeConfig) -> None:
    from deployments.app import deployment_options

    vllm = config.model_copy(update={"expert": ExpertConfig(kind="vllm", kv_cache_gib=2)})
    env = deployment_options(vllm)["expert"]["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"


def test_autoscaling_replaces_the_replica_count_of_its_role(config: CascadeConfig) -> None:
    from deployments.app import deployment_options

    serve = config.serve.model_copy(update={"autoscaling": {"expert": {"min_replicas": 1, "max_replicas": 3}}})
    options = deployment_options(config.model_copy(update={"serve": serve}))
    assert options["expert"]["autoscaling_config"].max_replicas == 3 and "num_replicas" not in options["expert"]


def test_autoscaling_for_an_unknown_role_is_a_config_error(config: CascadeConfig) -> None:
    from deployments.app import deployment_options

    serve = config.serve.model_copy(update={"autoscaling": {"gpu": {"max_replicas": 3}}})
    with pytest.raises(ConfigError, match="unknown roles"):
        deployment_options(config.model_copy(update={"serve": serve}))


def test_app_builder_builds_the_app_from_serve_args(config: CascadeConfig) -> None:
    from ray.serve import Application

    from deployments.app import app_builder

    assert isinstance(app_builder({"config": str(Path(config.artifact_dir) / "config.yaml")}), Application)


def test_the_serve_config_yaml_names_a_loadable_builder() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from deployments.app import app_builder

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "deployments" / "configs" / "spamassassin.yaml").read_text())
    application = ServeDeploySchema.model_validate(raw).applications[0]
    assert application.import_path == "deployments.app:app_builder" and app_builder.__name__ == "app_builder"
    assert CascadeConfig.from_yaml(root / application.args["config"]).serve.port == raw["http_options"]["port"]
