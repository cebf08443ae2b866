"""The served budget state: the controller starts at the certified rule, stays on the certified side,
and GET /v1/budget's ``guarantee`` says which guarantee covers the threshold now (no Ray here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from cascade.config import CascadeConfig
from cascade.types import CostModel
from deployments.artifact import ServedPolicy
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
                   "tie_seed": 7}
    return config, ServedPolicy(policy=ConfidencePolicy(n_classes=2), threshold=0.3, certificate=certificate,
                                label_names=("ham", "spam"), modality="text", small_dir=tmp_path)


@pytest.mark.parametrize("kind, lowest, highest", [
    ("rate", -np.inf, np.inf), ("cost", 0.3, np.inf), ("accepted-error", -np.inf, 0.3), ("joint", 0.3, 0.3),
])
def test_the_controller_is_clamped_to_the_certified_side(kind, lowest, highest, tmp_path):
    config, policy = served(kind, tmp_path)
    controller = policy.controller(config)
    assert (controller.min_threshold, controller.max_threshold) == (lowest, highest)
    assert (controller.tie_break, controller.tie_seed, controller.threshold) == (0.4, 7, 0.3)


def test_get_budget_reports_the_guarantee_in_force(tmp_path):
    config, policy = served("rate", tmp_path)
    controller = policy.controller(config)
    service = CascadeService(ServiceSettings.from_config(config, policy), small=None, expert=None,  # type: ignore[arg-type]
                             policy=policy.policy, controller=LocalBudget(controller), cost=CostModel())
    before = asyncio.run(service.budget()).guarantee
    assert before.status == "certified" and before.statement == "the rate certificate"
    controller.decide(np.full(200, 0.9))
    after = asyncio.run(service.budget()).guarantee
    assert after.status == "tracking" and after.certified_threshold == 0.3
