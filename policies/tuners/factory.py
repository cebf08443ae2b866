"""Build the tuner a budget (:data:`~cascade.config.BudgetConfig`, one model per kind) describes."""

from __future__ import annotations

from numpy.typing import ArrayLike

from cascade.config import BudgetConfig, ChainBudget, CostBudget, JointBudget, RateBudget
from cascade.types import CostModel
from policies.tuners.base import BudgetTuner
from policies.tuners.chain import ChainGrid, ChainTuner
from policies.tuners.conformal import CostTuner, RateTuner
from policies.tuners.joint import JointTuner
from policies.tuners.ltt import AcceptedErrorTuner
from policies.tuners.risks import Grid, threshold_grid


def make_tuner(budget: BudgetConfig, cost: CostModel | None = None, max_model_len: int | None = None,
               grid: Grid | ChainGrid | None = None, *, max_request_cost: float | None = None
               ) -> BudgetTuner | ChainTuner:
    """The tuner ``budget`` describes.

    A cost budget's per-call bound is ``budget.max_cost_per_call``, or else ``max_model_len``
    tokens (the expert's context) at the prices of ``cost``. Accepted-error and joint budgets
    test ``grid`` (:func:`budget_grid` on the fit part), fixed before the certify part is seen; a
    chain budget tests a :class:`~policies.tuners.chain.ChainGrid` (:func:`chain_grid`) and, with a
    cost bound, needs ``max_request_cost`` (:func:`cascade.config.tiers.max_request_cost`).

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
    if isinstance(budget, ChainBudget):
        if not isinstance(grid, ChainGrid):
            raise ValueError("budget: a 'chain' budget certifies every tier's threshold at once, over a ChainGrid fixed "
                             "on the fit part (policies.tuners.factory.chain_grid): `cascade tune CONFIG` places it "
                             "and certifies, `python -m experiments.chain CONFIG` runs its experiment")
        return ChainTuner(alpha=budget.target, max_abstention=budget.max_abstention,
                          max_cost_per_1k=budget.max_cost_per_1k, delta=budget.delta, grid=grid, method=budget.method,
                          error=budget.error, max_request_cost=max_request_cost)
    if budget.kind == "accepted-error":
        return AcceptedErrorTuner(alpha=budget.target, delta=budget.delta, grid=grid)
    if not isinstance(budget, JointBudget) or budget.max_rate is None:
        raise ValueError("budget.max_rate: a 'joint' budget needs the deferral-rate bound max_rate")
    return JointTuner(alpha=budget.target, max_rate=budget.max_rate, delta=budget.delta, grid=grid)


def budget_grid(budget: BudgetConfig, fit_scores: ArrayLike, tie_keys: ArrayLike | None = None) -> Grid | None:
    """The Learn-then-Test grid of ``budget`` placed on the fit part's scores (None for other budgets).

    A joint budget's grid spans deferral rates up to ``max_rate``; an accepted-error budget's all rates.
    """
    if isinstance(budget, (RateBudget, CostBudget, ChainBudget)):  # a chain budget's grid: chain_grid
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


def chain_grid(budget: ChainBudget, fit_scores: ArrayLike, fit_correct: ArrayLike, costs: ArrayLike) -> ChainGrid:
    """The chain budget's rule grid placed on the fit part's deferral scores ``(n, K)`` (one column per tier, the small
    tier's first), with the fit part's outcomes and costs that order fixed-sequence testing.

    >>> import numpy as np
    >>> scores = np.random.default_rng(0).random((200, 3))
    >>> budget = ChainBudget(target=0.1, max_abstention=0.1, delta=0.1, n_per_tier=3)
    >>> chain_grid(budget, scores, scores < 0.9, [0.0, 1.0, 5.0]).thresholds.shape[1]
    3
    """
    return ChainGrid.from_fit(fit_scores, budget.n_per_tier, budget.grid_abstention_span, fit_correct=fit_correct,
                              costs=costs)
