"""The served budget state: the controller starts at the certified rule, stays on the certified side,
and GET /v1/budget's ``guarantee`` says which guarantee covers the threshold now (no Ray here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from cascade.config import CascadeConfig
from cascade.types import CostModel
from deployments.served import ServedPolicy
from deployments.budgets import LocalBudget
from deployments.contracts import ServiceSettings
from deployments.service import CascadeService
from policies import ConfidencePolicy

BUDGETS = {
    "rate": {"kind": "rate", "target": 0.2},
    "cost": {"kind": "cost", "target": 100.0},
    "accepted-error": {"kind": "accepted-error", "target": 0.05, "delta": 0.1},
    "joint": {"kind": "joint", "target": 0.05, "max_rate": 0.3, "delta": 0.1},
}


def served(kind: str, tmp_path: Path) -> tuple[CascadeConfig, ServedPolicy]:
    config = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}, "budget": BUDGETS[kind]})
    certificate = {"statement": f"the {kind} certificate", "achieved": {"defer_rate": 0.2}, "tie_break": 0.4,
                   "tie_seed": 7, "passed_rules": [[0.1, 1.0], [0.3, 0.4]]}
    return config, ServedPolicy(policy=ConfidencePolicy(n_classes=2), threshold=0.3, certificate=certificate,
                                label_names=("ham", "spam"), modality="text", small_dir=tmp_path)


@pytest.mark.parametrize("kind, lowest, highest, coverage, adapt", [
    ("rate", -np.inf, np.inf, "above", True), ("cost", 0.3, np.inf, "above", True),
    ("accepted-error", 0.1, 0.3, "rules", False), ("joint", 0.1, 0.3, "rules", False),
])
def test_the_controller_starts_at_the_certified_rule_and_moves_only_where_it_is_covered(
        kind, lowest, highest, coverage, adapt, tmp_path):
    config, policy = served(kind, tmp_path)
    controller = policy.controller(config)
    assert (controller.min_threshold, controller.max_threshold) == (lowest, highest)
    assert (controller.coverage, controller.adapt) == (coverage, adapt)
    assert (controller.tie_break, controller.tie_seed, controller.threshold) == (0.4, 7, 0.3)


def service_for(config: CascadeConfig, policy: ServedPolicy) -> CascadeService:
    return CascadeService(ServiceSettings.from_config(config, policy), small=None, expert=None,  # type: ignore[arg-type]
                          policy=policy.policy, controller=LocalBudget(policy.controller(config)), cost=CostModel())


def test_get_budget_reports_the_guarantee_in_force(tmp_path):
    config, policy = served("rate", tmp_path)
    service = service_for(config, policy)
    state = asyncio.run(service.budget())
    assert state.guarantee.status == "certified" and state.guarantee.statement.startswith("the rate certificate")
    assert state.served_rule == "track"
    service._controller.controller.decide(np.full(200, -0.9))   # nothing deferred: the threshold falls
    after = asyncio.run(service.budget()).guarantee
    assert after.status == "tracking" and after.certified_threshold == 0.3


def test_an_app_serving_the_certified_rule_refuses_a_new_target(tmp_path):
    from deployments.contracts import InvalidBudget
    from deployments.schemas import BudgetUpdate

    config, policy = served("accepted-error", tmp_path)
    service = service_for(config, policy)
    assert asyncio.run(service.budget()).served_rule == "certified"
    with pytest.raises(InvalidBudget, match="serves the certified rule"):
        asyncio.run(service.set_budget(BudgetUpdate(target=0.3)))
