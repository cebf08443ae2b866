"""The cascade's HTTP API in-process: a real tuned artifact, the router's service and real experts.

The same FastAPI app runs inside the Ray Serve router; ``test_serve_integration.py`` repeats the
important checks against the real Ray app with vLLM. Shared fixtures live in ``conftest.py``,
helpers in ``serving.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cascade.artifact import ArtifactError
from cascade.config import CascadeConfig, ConfigError, ExpertConfig
from deployments.budgets import LocalBudget
from deployments.control import ControlAccess
from deployments.http import build_http_app
from deployments.contracts import ServiceSettings
from deployments.service import CascadeService
from serving import (BAD_INPUTS, OK, KeptDeferred, Tiers, cascade_config, client, detect, free_port,
                     in_process_app, share_after_target)


@pytest.fixture
def api(config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> TestClient:
    """A fresh app (fresh controller) whose expert is the no-LLM neighbour vote."""
    return client(in_process_app(config, knn_expert, tiers))


@pytest.fixture(scope="module")
def shared_api(config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> TestClient:
    """One app for tests that leave no state behind (refused requests)."""
    return client(in_process_app(config, knn_expert, tiers))


@pytest.fixture
def api_expert_down(config: CascadeConfig, tiny_llama: Path, tiers: Tiers) -> TestClient:
    """A fresh app whose expert is an OpenAI-compatible server that is not there."""
    from cascade.experts import make_expert

    expert = make_expert(ExpertConfig(kind="openai", base_url=f"http://127.0.0.1:{free_port()}",
                                      model=str(tiny_llama), max_retries=0, timeout_s=2.0, labels=["ham", "spam"]))
    return client(in_process_app(config, expert, tiers))




@pytest.mark.parametrize(("method", "path", "kwargs", "status", "needle"),
                         [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_a_4xx_naming_the_problem(shared_api: TestClient, method: str, path: str,
                                                 kwargs: dict[str, Any], status: int, needle: str) -> None:
    response = shared_api.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]


def test_a_verdict_carries_label_probability_tier_score_threshold_cost_and_latency(
        api: TestClient, kept_and_deferred: KeptDeferred) -> None:
    response = detect(api, kept_and_deferred[0][:1])
    verdict = response.json()["verdicts"][0]
    assert verdict["label"] in ("ham", "spam") and 0.5 <= verdict["probability"] <= 1
    assert verdict["source"] == "small" and verdict["degraded"] is False
    assert verdict["deferral_score"] <= verdict["threshold"]
    assert verdict["cost"] == pytest.approx(0.001)
    assert set(verdict["latency_ms"]) == {"small", "policy", "total"}
    assert 0 < verdict["latency_ms"]["policy"] < verdict["latency_ms"]["total"]


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
    response = detect(client(in_process_app(impatient, SlowExpert(), tiers)), kept_and_deferred[1][:2])
    assert [v["degraded"] for v in response.json()["verdicts"]] == [True, True]


def test_a_small_tier_that_cannot_answer_is_a_503_not_a_500(config: CascadeConfig, knn_expert: Any,
                                                            tiers: Tiers) -> None:
    served = tiers[0]

    class UnreachableDetector:
        async def score(self, payload: Any) -> Any:
            raise ConnectionError("detector replica is gone")

        async def ready(self) -> bool:
            return False

    service = CascadeService(ServiceSettings.from_config(config, served), small=UnreachableDetector(),
                             expert=knn_expert, policy=served.policy, controller=LocalBudget(served.controller(config)),
                             cost=config.cost)
    app = build_http_app(service, config.serve, ControlAccess.from_token(None))
    response = TestClient(app).post("/v1/detect", json={"samples": [OK]})
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
    api = client(in_process_app(steady, knn_expert, tiers))
    answered = [detect(api, kept_and_deferred[1][:8]).json()["answered_by"]["expert"] for _ in range(2)]
    budget = api.get("/v1/budget").json()
    assert answered == [8, 2] and budget["capped"] is True and budget["cap_remaining"] == 0


def test_a_cap_overriding_an_accepted_error_certificate_flags_every_forced_answer(
        config: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred) -> None:
    import dataclasses

    served, small = tiers
    certificate = {"kind": "accepted-error", "statement": "P(accepted_error > 0.05) ≤ 0.1", "tie_break": 1.0,
                   "tie_seed": None, "achieved": {"defer_rate": 0.2},
                   "passed_rules": [[served.threshold - 0.1, 1.0], [served.threshold, 1.0]]}
    capped = config.model_copy(update={"budget": config.budget.as_kind(
        "accepted-error", target=0.05, delta=0.1, hard_cap=0.1, window=20, cap_overrides_certificate=True)})
    api = client(in_process_app(capped, knn_expert, (dataclasses.replace(served, certificate=certificate), small)))
    kept, deferred = kept_and_deferred
    verdicts = detect(api, deferred[:8]).json()["verdicts"] + detect(api, kept[:4]).json()["verdicts"]
    forced = [v for v in verdicts if v["forced"]]
    assert len(forced) == 6 and sum(v["source"] == "expert" for v in verdicts) == 2   # cap: 2 per 20 requests
    assert all(v["source"] == "small" and v["degraded"] and not v["certified"] for v in forced)
    assert all(v["certified"] for v in verdicts if not v["forced"])
    budget = api.get("/v1/budget").json()
    assert budget["guarantee"]["status"] == "overridden" and budget["served_rule"] == "certified"
    assert (budget["forced_in_window"], budget["forced_total"]) == (6, 6)


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
    assert body["error"].startswith("expert unavailable")  # a server that refuses connections


def test_healthz_names_labels_expert_and_request_limit(api: TestClient) -> None:
    body = api.get("/healthz").json()
    assert body == {"status": "ok", "name": "serve-test", "modality": "text", "labels": ["ham", "spam"],
                    "expert": "knn-vote (k=4, no LLM)", "max_samples_per_request": 8}


def test_openapi_documents_every_route_and_the_limits(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/explain", "/v1/budget", "/healthz"} <= set(spec["paths"])
    sample = spec["components"]["schemas"]["DetectSample"]["properties"]["text"]["anyOf"][0]
    assert sample["maxLength"] == 2000
    docs = api.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text  # the docs page renders this spec


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


def test_the_served_expert_retrieves_from_the_labels_the_detector_learned_from(config: CascadeConfig) -> None:
    from cascade.data.roles import load_roles
    from cascade.small import SmallTier
    from deployments.expert import training_pool

    train = load_roles(config).train
    detector_learned_from = SmallTier.from_config(config).training_subset(train)
    pool = training_pool(config)
    assert pool is not None and sorted(pool.ids) == sorted(detector_learned_from.ids)
    assert len(pool) < len(train)  # a few-label setting: the expert gets no more labels than the detector


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


def test_autoscaling_for_an_unknown_role_or_with_a_bad_value_fails_at_load(config: CascadeConfig) -> None:
    raw = config.model_dump(mode="json")
    with pytest.raises(ConfigError, match="serve.autoscaling.gpu: Input should be 'detector', 'expert' or 'router'"):
        CascadeConfig.from_dict({**raw, "serve": {"autoscaling": {"gpu": {"max_replicas": 3}}}})
    with pytest.raises(ConfigError, match="serve.autoscaling.router.min_replicas: Input should be greater than"):
        CascadeConfig.from_dict({**raw, "serve": {"autoscaling": {"router": {"min_replicas": -1}}}})


def test_the_builder_refuses_a_serve_instance_listening_elsewhere(config: CascadeConfig) -> None:
    from deployments.app import check_http_options

    check_http_options(config, (config.serve.host, config.serve.port))
    with pytest.raises(ConfigError, match=f"serve.port is {config.serve.port} but Ray Serve listens on port 1234"):
        check_http_options(config, (config.serve.host, 1234))


def _built(config: CascadeConfig) -> Any:
    from ray.serve._private.build_app import build_app as serve_build

    from deployments.app import build_app

    return serve_build(build_app(config), name="cascade")


def test_a_cheap_small_tier_runs_in_the_router_with_no_detector_deployment(config: CascadeConfig) -> None:
    from ray.serve._private.build_app import build_app as serve_build

    from deployments.app import app_builder

    built = serve_build(app_builder({"config": str(Path(config.artifact_dir) / "config.yaml")}), name="cascade")
    deployments = {d.name: d for d in built.deployments}
    assert built.ingress_deployment_name == "CascadeRouter"
    assert set(deployments) == {"ExpertServer", "CascadeRouter", "BudgetHolder"}
    assert deployments["BudgetHolder"].num_replicas == 1
    assert deployments["CascadeRouter"].max_queued_requests == config.serve.router_max_queued_requests
    assert deployments["ExpertServer"].max_queued_requests == config.serve.expert_max_queued_requests


def test_the_small_tier_gets_its_own_deployment_when_configured(config: CascadeConfig) -> None:
    serve = config.serve.model_copy(update={"small_tier": "deployment"})
    deployments = {d.name: d for d in _built(config.model_copy(update={"serve": serve})).deployments}
    assert deployments["SmallDetector"].max_queued_requests == config.serve.detector_max_queued_requests


@pytest.mark.parametrize(("kind", "placement", "in_router"), [
    ("tfidf-lr", "auto", True), ("isolation-forest", "auto", True), ("embedding-lr", "auto", False),
    ("minilm-finetune", "auto", False), ("tfidf-lr", "deployment", False), ("embedding-lr", "router", True)])
def test_where_the_small_tier_runs_follows_the_detector_kind_unless_configured(
        config: CascadeConfig, kind: str, placement: str, in_router: bool) -> None:
    from deployments.detector import small_in_router

    chosen = config.model_copy(update={"detector": config.detector.model_copy(update={"kind": kind}),
                                       "serve": config.serve.model_copy(update={"small_tier": placement})})
    assert small_in_router(chosen) is in_router


def test_a_batch_triage_splits_back_into_each_requests_share() -> None:
    import numpy as np

    from deployments.answers import SmallScores, Triage

    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    batch = Triage(SmallScores(probabilities, probabilities), np.array([0.1, 0.2, 0.4, 0.5]), np.full(4, 0.3),
                   np.array([False, False, True, False]), forced=np.array([False, False, False, True]),
                   covered=np.array([True, True, True, False]), small_ms=2.0)
    first, second = batch.split([1, 3])
    assert first.defer.tolist() == [False] and second.scores.tolist() == [0.2, 0.4, 0.5]
    assert second.forced.tolist() == [False, False, True] and second.covered.tolist() == [True, True, False]
    rejoined = Triage.join([first, second])
    assert np.array_equal(rejoined.small.probabilities, probabilities)
    for column in ("defer", "forced", "covered"):
        assert getattr(rejoined, column).tolist() == getattr(batch, column).tolist()


def test_app_builder_refuses_unknown_args_by_name() -> None:
    from pydantic import ValidationError

    from deployments.app import app_builder

    with pytest.raises(ValidationError, match="confg"):
        app_builder({"confg": "experiments/configs/spamassassin.yaml"})


def test_the_serve_config_yaml_resolves_to_the_builder_and_a_valid_config() -> None:
    import yaml
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    from deployments.app import AppArgs, app_builder

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "deployments" / "configs" / "spamassassin.yaml").read_text())
    application = ServeDeploySchema.model_validate(raw).applications[0]
    assert import_attr(application.import_path) is app_builder
    args = AppArgs.model_validate(application.args)
    serve = CascadeConfig.from_yaml(root / args.config).serve
    assert raw["http_options"] == {"host": serve.host, "port": serve.port}
