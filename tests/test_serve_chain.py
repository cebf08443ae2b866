"""Serving a tuned three-tier chain in process: the router's service with real kNN-vote tiers, each behind
its own breaker. Each verdict names the tier the certified rule routes it to (hop by hop, as
``apply_chain`` routes the same scores); abstained samples carry no label, wait in the review queue until
a reviewer's label comes back; a failed tier degrades its samples, never abstains them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cascade.config import CascadeConfig
from cascade.data.roles import load_roles
from cascade.decision_setup import open_decision_log
from cascade.experts import make_expert
from cascade.experts.calibrated import CalibratedExpert
from cascade.small import SmallTier
from deployments.budgets import LocalBudget
from deployments.chain import ChainTier, ServedChain
from deployments.contracts import ServiceSettings
from deployments.control import ControlAccess
from deployments.detector import LocalSmallTier
from deployments.expert import training_pool
from deployments.expert_calls import ExpertCalls
from deployments.http import build_http_app
from deployments.served import expert_calibrator, load_served, tier_view
from deployments.service import CascadeService
from policies.rules import ConfidencePolicy
from policies.tune import tune
from policies.tuners.chain import apply_chain

CONTROL, FEEDBACK = "control-token", "feedback-token"
LABELS = ["benign", "malignant"]
TIERS = [{"name": "near", "expert": {"kind": "knn-vote", "labels": LABELS, "shots": 3}, "cost_per_call": 0.1},
         {"name": "wide", "expert": {"kind": "knn-vote", "labels": LABELS, "shots": 9}, "cost_per_call": 1.0}]


@pytest.fixture(scope="module")
def config(tumours_home: Path) -> Iterator[CascadeConfig]:
    """A chain tuned on a real table (breast cancer): isolation forest, then two kNN votes, then review."""
    import policies.certify_ledger

    root = tumours_home
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policies.certify_ledger, "cache_dir", lambda name: root / "ledger" / name)
        config = CascadeConfig.from_dict({
            "name": "tumours-chain", "artifact_dir": str(root / "artifact"),
            "dataset": {"name": "csv", "path": str(root / "tumours.csv"), "label_column": "diagnosis",
                        "label_budget": 40},
            "detector": {"kind": "isolation-forest", "params": {"n_estimators": 10}}, "tiers": TIERS,
            "budget": {"kind": "chain", "target": 0.1, "max_abstention": 0.3, "max_cost_per_1k": 900, "delta": 0.3,
                       "n_per_tier": 4},
            "serve": {"max_samples_per_request": 64,
                      "decision_log": {"url": f"sqlite:///{root / 'decisions.sqlite'}", "flush_interval_s": 0.05}},
            "experiment": {"seed": 0}})
        tune(config, progress=False)
        yield config


def tier_expert(config: CascadeConfig, name: str) -> Any:
    """Tier ``name``'s expert as its replica builds it: its config, prices, pool and calibrator."""
    view = tier_view(config, name)
    return CalibratedExpert(make_expert(view.expert, cost=view.cost, pool=training_pool(view)),
                            expert_calibrator(config, name))


class Down:
    """A tier whose replica is gone."""

    label_names = tuple(LABELS)

    async def ajudge(self, X: Any) -> Any:
        raise ConnectionError("tier replica is gone")


def chain_app(config: CascadeConfig, replace: dict[str, Any] | None = None) -> tuple[TestClient, CascadeService]:
    served = load_served(config)
    settings = ServiceSettings.from_config(config, served)
    experts = {name: (replace or {}).get(name) or tier_expert(config, name) for name in served.chain.tiers}
    prices = {tier.name: tier for tier in config.tiers or []}
    chain = ServedChain(served.chain, [ChainTier(name, expert, ExpertCalls(settings), prices[name])
                                       for name, expert in experts.items()], served.label_names)
    service = CascadeService(settings, small=LocalSmallTier(SmallTier.load(served.small_dir)), expert=chain.last.expert,
                             policy=served.policy, controller=LocalBudget(served.controller(config)), cost=config.cost,
                             decision_log=open_decision_log(config), chain=chain)
    app = build_http_app(service, config.serve, ControlAccess.from_token(CONTROL),
                         ControlAccess.from_token(FEEDBACK, section="feedback"))
    return TestClient(app), service


@pytest.fixture(scope="module")
def test_rows(config: CascadeConfig) -> np.ndarray:
    return np.asarray(load_roles(config).test.X, dtype=float)[:64]


def routed(config: CascadeConfig, rows: np.ndarray) -> np.ndarray:
    """Each row's tier index by ``apply_chain`` on every tier's score (-1: abstained), scored here directly."""
    served = load_served(config)
    small = SmallTier.load(served.small_dir).predict_proba(rows)
    probabilities = [small, *(asyncio.run(tier_expert(config, name).ajudge(rows)).probs for name in served.chain.tiers)]
    scores = np.column_stack([ConfidencePolicy(n_classes=2).score(p) for p in probabilities])
    return apply_chain(scores, served.chain.rule)[0]


def detect(http: TestClient, rows: np.ndarray) -> dict[str, Any]:
    response = http.post("/v1/detect", json={"samples": [{"features": row.tolist()} for row in rows]})
    assert response.status_code == 200, response.text
    return response.json()


def test_each_verdict_names_the_tier_the_certified_rule_routes_it_to(config: CascadeConfig,
                                                                     test_rows: np.ndarray) -> None:
    http, service = chain_app(config)
    body = detect(http, test_rows)
    names = ["small", "near", "wide"]
    expected = [names[k] if k >= 0 else None for k in routed(config, test_rows)]
    assert [v["tier"] for v in body["verdicts"]] == expected
    assert set(expected) >= {"small", None}  # the slice reaches the small tier's answers and review
    assert body["answered_by"] == {**{name: expected.count(name) for name in names}, "abstained": expected.count(None)}
    visited = {"small": 0.0, "near": 0.1, "wide": 1.1, None: 1.1}  # what tuning billed each route (cost_per_call)
    for verdict in body["verdicts"]:
        assert verdict["certified"] and not verdict["degraded"]
        assert verdict["cost"] == pytest.approx(visited[verdict["tier"]])
        assert (verdict["source"], verdict["label"] is None) == (
            ("abstained", True) if verdict["tier"] is None else ("small" if verdict["tier"] == "small" else "expert",
                                                                False))
    service.decision_log.close()


def test_abstained_samples_wait_for_review_until_their_label_comes_back(config: CascadeConfig,
                                                                       test_rows: np.ndarray) -> None:
    http, service = chain_app(config)
    abstained = [v for v in detect(http, test_rows)["verdicts"] if v["source"] == "abstained"]
    assert abstained
    assert http.get("/v1/review").status_code == 401  # reviewers hold the feedback token
    review = http.get("/v1/review", headers={"Authorization": f"Bearer {FEEDBACK}"}).json()
    waiting = {item["decision_id"]: item["sample"] for item in review["items"]}
    assert {v["decision_id"] for v in abstained} <= set(waiting) and review["labels"] == LABELS
    first = abstained[0]["decision_id"]
    assert len(waiting[first]["features"]) == test_rows.shape[1]
    sent = http.post("/v1/feedback", json={"items": [{"decision_id": first, "label": "malignant"}]},
                     headers={"Authorization": f"Bearer {FEEDBACK}"})
    assert sent.json()["counts"] == {"ok": 1}
    after = http.get("/v1/review", headers={"Authorization": f"Bearer {FEEDBACK}"}).json()
    assert first not in {item["decision_id"] for item in after["items"]}
    service.decision_log.close()


def test_a_failed_tier_leaves_its_samples_with_the_previous_answer_degraded_never_abstained(
        config: CascadeConfig, test_rows: np.ndarray) -> None:
    http, service = chain_app(config, replace={"wide": Down()})
    expected = routed(config, test_rows)
    verdicts = detect(http, test_rows)["verdicts"]
    reached_wide = [v for v, k in zip(verdicts, expected) if k in (-1, 2)]
    assert reached_wide and all(v["tier"] == "near" and v["degraded"] and v["degraded_reason"] == "error"
                                and not v["certified"] and v["label"] in LABELS for v in reached_wide)
    assert all(not v["degraded"] for v, k in zip(verdicts, expected) if k in (0, 1))
    ready = http.get("/readyz").json()
    assert set(ready["tiers"]) == {"near", "wide"}
    service.decision_log.close()


def test_the_budget_says_the_chain_rule_is_served_as_certified_and_cannot_be_moved(config: CascadeConfig) -> None:
    http, service = chain_app(config)
    budget = http.get("/v1/budget").json()
    assert budget["kind"] == "chain" and budget["served_rule"] == "certified"
    assert budget["guarantee"]["status"] == "certified"
    assert budget["certificate"]["rule"] == load_served(config).chain.certificate.rule
    refused = http.put("/v1/budget", json={"target": 0.5}, headers={"Authorization": f"Bearer {CONTROL}"})
    assert refused.status_code == 422 and "certified rule" in refused.json()["message"]
    service.decision_log.close()


def test_a_chain_config_refuses_tenant_targets_and_a_tracking_rule(config: CascadeConfig) -> None:
    from cascade.config import ConfigError

    raw = config.model_dump(mode="json")
    raw["serve"]["tenants"] = [{"name": "team-a", "token_env": "TEAM_A", "target": 0.2}]
    with pytest.raises(ConfigError, match="serve.tenants.0.target: a chain serves its certified rule"):
        CascadeConfig.from_dict(raw)
    raw["serve"]["tenants"] = []
    raw["budget"]["served_rule"] = "track"
    with pytest.raises(ConfigError, match="budget.served_rule: a chain serves its certified rule"):
        CascadeConfig.from_dict(raw)


def test_build_app_puts_each_tier_in_its_own_expert_deployment(config: CascadeConfig) -> None:
    from deployments.app import build_app, tier_options, deployment_options

    names = [tier_options(config, tier, deployment_options(config)["expert"])["name"] for tier in ("near", "wide")]
    assert names == ["ExpertServer-near", "ExpertServer-wide"]
    assert build_app(config) is not None  # loads and checks the chain artifact, each tier's calibrator included


def test_a_chain_artifact_missing_a_tiers_calibrator_fails_at_build(config: CascadeConfig, tmp_path: Path) -> None:
    import shutil

    from cascade.artifact import ArtifactError
    from deployments.app import build_app

    copy = tmp_path / "artifact"
    shutil.copytree(config.artifact_dir, copy)
    shutil.rmtree(copy / "expert_calibrators" / "wide")
    with pytest.raises(ArtifactError, match="expert_calibrators/wide"):
        build_app(config.model_copy(update={"artifact_dir": str(copy)}))
