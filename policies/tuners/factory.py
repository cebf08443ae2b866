"""Build the tuner a budget (:data:`~cascade.config.BudgetConfig`, one model per kind) describes."""

from __future__ import annotations

from numpy.typing import ArrayLike

from cascade.config import BudgetConfig, CostBudget, JointBudget, RateBudget
from cascade.types import CostModel
from policies.tuners.base import BudgetTuner
from policies.tuners.conformal import CostTuner, RateTuner
from policies.tuners.joint import JointTuner
from policies.tuners.ltt import AcceptedErrorTuner
from policies.tuners.risks import Grid, threshold_grid


def make_tuner(budget: BudgetConfig, cost: CostModel | None = None, max_model_len: int | None = None,
               grid: Grid | None = None) -> BudgetTuner:
    """The tuner ``budget`` describes.

    A cost budget's per-call bound is ``budget.max_cost_per_call``, or else ``max_model_len``
    tokens (the expert's context) at the prices of ``cost``. Accepted-error and joint budgets
    test ``grid`` (:func:`budget_grid` on the fit part), fixed before the certify part is seen.

    >>> make_tuner(RateBudget(target=0.15, delta=0.05))
    RateTuner(delta=0.05, target=0.15)
    >>> make_tuner(CostBudget(target=400.0), CostModel(expert_per_1k_prompt_tokens=0.5), 2048)
    CostTuner(max_expert_cost=2.024)
    """
    if isinstance(budget, RateBudget):
        return RateTuner(target=budget.target, delta=budget.delta)
    if isinstance(budget, CostBudget):
        return CostTuner(target_per_1k=budget.target, small_cost=cost.small_per_call if cost else 0.0,
                         max_expert_cost=max_cost_per_call(budget, cost, max_model_len))
    if budget.delta is None:
        raise ValueError(f"budget.delta: a '{budget.kind}' budget is guaranteed with probability 1-δ; set delta")
    if budget.kind == "accepted-error":
        return AcceptedErrorTuner(alpha=budget.target, delta=budget.delta, grid=grid)
    if not isinstance(budget, JointBudget) or budget.max_rate is None:
        raise ValueError("budget.max_rate: a 'joint' budget needs the deferral-rate bound max_rate")
    return JointTuner(alpha=budget.target, max_rate=budget.max_rate, delta=budget.delta, grid=grid)


def budget_grid(budget: BudgetConfig, fit_scores: ArrayLike, tie_keys: ArrayLike | None = None) -> Grid | None:
    """The Learn-then-Test grid of ``budget`` placed on the fit part's scores (None for other budgets).

    A joint budget's grid spans deferral rates up to ``max_rate``; an accepted-error budget's all rates.
    """
    if isinstance(budget, (RateBudget, CostBudget)):
        return None
    max_rate = budget.max_rate if isinstance(budget, JointBudget) and budget.max_rate is not None else 1.0
    return threshold_grid(fit_scores, budget.n_grid, max_rate, tie_keys)


def max_cost_per_call(budget: CostBudget, cost: CostModel | None, max_model_len: int | None) -> float:
    """The most one expert call can cost: ``budget.max_cost_per_call``, or ``max_model_len`` tokens at the prices."""
    if budget.max_cost_per_call is not None:
        return float(budget.max_cost_per_call)
    if cost is None or max_model_len is None:
        raise ValueError("budget.max_cost_per_call: a 'cost' budget needs the most one expert call can cost; set it, "
                         "or give the cost model and the expert's max_model_len")
    return cost.max_expert_cost(max_model_len)
