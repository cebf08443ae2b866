"""Build the tuner a :class:`~cascade.config.BudgetConfig` describes."""

from __future__ import annotations

from cascade.config import BudgetConfig
from cascade.types import CostModel
from policies.tuners.base import BudgetTuner
from policies.tuners.conformal import CostTuner, RateTuner
from policies.tuners.joint import JointTuner
from policies.tuners.ltt import AcceptedErrorTuner


def make_tuner(budget: BudgetConfig, cost: CostModel | None = None) -> BudgetTuner:
    """The tuner a :class:`~cascade.config.BudgetConfig` describes.

    >>> make_tuner(BudgetConfig(kind="rate", target=0.15, delta=0.05))
    RateTuner(delta=0.05, target=0.15)
    """
    if budget.kind == "rate":
        return RateTuner(target=budget.target, delta=budget.delta)
    if budget.kind == "cost":
        return CostTuner(target_per_1k=budget.target, small_cost=cost.small_per_call if cost else 0.0)
    if budget.delta is None:
        raise ValueError(f"budget.delta: a '{budget.kind}' budget is guaranteed with probability 1-δ; set delta")
    if budget.kind == "accepted-error":
        return AcceptedErrorTuner(alpha=budget.target, delta=budget.delta)
    if budget.max_rate is None:
        raise ValueError("budget.max_rate: a 'joint' budget needs the deferral-rate bound max_rate")
    return JointTuner(alpha=budget.target, max_rate=budget.max_rate, delta=budget.delta)
