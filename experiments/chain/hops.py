"""Does each tier earn its place? The chain's frontier against each cut of it (one tier dropped).

At the budget's abstention bound γ, tier ``j`` *earns its place* when the chain serves a cost the cut
cannot reach (``reach``), or when, at some cost per 1k, the best accuracy of answered samples over the
chain's grid rules beats the best over the cut's by more than sampling noise: the cost ``x*`` is the one
where the chain gains most on the *fit* part; the gain at ``x*`` is measured on the *test* part, with a
paired bootstrap over test samples (both chains on the same resamples; a side with no rule within the
bounds counts as accuracy 0). It earns its place when the bootstrap's lower ``(1 - LEVEL) / 2`` quantile of
the gain is above 0. Both grids are placed on the fit part the same way (:func:`grid_rules`); the
frontier value at ``x*`` is each grid's best test rule, so a bigger grid is favoured a little, as on any
frontier drawn over more rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cascade.config import ChainBudget
from experiments.chain.frontier import RULE_CHUNK, best_within, rule_metrics, staircase
from policies.chain_scores import ChainPart
from policies.tuners.chain import apply_chain
from policies.tuners.factory import chain_grid

BOOTSTRAP = 1000
LEVEL = 0.90


def grid_rules(budget: ChainBudget, fit: ChainPart) -> np.ndarray:
    """The budget's rule grid ``(R, K)`` placed on the fit part (:func:`policies.tuners.factory.chain_grid`); a
    one-tier chain's rules are its abstention thresholds alone, placed the same way."""
    if len(fit.names) >= 2:
        return chain_grid(budget, fit.scores, fit.correct, fit.costs).thresholds
    span, column = budget.grid_abstention_span, fit.scores[:, 0]
    levels = 1 - span * np.linspace(0, 1, budget.n_per_tier) if span > 0 else np.ones(1)
    values = np.where(levels >= 1, np.inf, np.quantile(column, np.clip(levels, 0, 1), method="inverted_cdf"))
    return np.unique(values)[:, None]


def rule_outcomes(part: ChainPart, rules: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per rule and sample ``(R, n)``: answered, answered wrongly, and what the sample cost."""
    scores, correct, costs = part.scores, part.correct, part.costs
    rows = np.arange(len(scores))
    answered, wrong, cost = [], [], []
    for start in range(0, len(rules), RULE_CHUNK):
        answered_by, visited = apply_chain(scores, np.atleast_2d(rules[start:start + RULE_CHUNK]))
        answered.append(answered_by >= 0)
        wrong.append(answered[-1] & ~correct[rows, np.maximum(answered_by, 0)])
        cost.append((visited * costs).sum(axis=2))
    return np.concatenate(answered), np.concatenate(wrong), np.concatenate(cost)


def bootstrap_best(outcomes: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray, max_cost_per_1k: float,
                   max_abstention: float) -> np.ndarray:
    """The best accuracy of answered samples within both bounds under each resample's sample ``weights`` ``(B, n)``
    (0 where no rule is within them)."""
    answered, wrong, cost = (np.asarray(part, dtype=float) for part in outcomes)
    n = weights.sum(axis=1, keepdims=True)
    count = weights @ answered.T
    accuracy = 1 - np.divide(weights @ wrong.T, count, out=np.zeros_like(count), where=count > 0)
    allowed = ((1000 * (weights @ cost.T) / n <= max_cost_per_1k + 1e-9)
               & (1 - count / n <= max_abstention + 1e-12))
    return np.where(allowed, accuracy, 0.0).max(axis=1)


def hop_verdicts(budget: ChainBudget, fit: ChainPart, test: ChainPart, seed: int = 0) -> list[dict[str, Any]]:
    """For each tier, the chain against the cut without it (see the module)."""
    gamma = budget.max_abstention or 0.0
    full_rules = grid_rules(budget, fit)
    full_fit = rule_metrics(fit.scores, fit.correct, fit.costs, full_rules)
    full_test = rule_metrics(test.scores, test.correct, test.costs, full_rules)
    full_outcomes = rule_outcomes(test, full_rules)
    weights = np.random.default_rng(seed).multinomial(len(test), np.full(len(test), 1 / len(test)),
                                                       size=BOOTSTRAP).astype(float)
    full_frontier = staircase(full_test, gamma)
    verdicts = []
    for name in fit.names:
        cut_fit_part, cut_test_part = fit.drop(name), test.drop(name)
        cut_rules = grid_rules(budget, cut_fit_part)
        cut_fit = rule_metrics(cut_fit_part.scores, cut_fit_part.correct, cut_fit_part.costs, cut_rules)
        cut_test = rule_metrics(cut_test_part.scores, cut_test_part.correct, cut_test_part.costs, cut_rules)
        cost_at, fit_gain = _chosen_cost(full_fit, cut_fit, gamma)
        full_best, cut_best = (max(best_within(m, cost_at, gamma), 0.0) for m in (full_test, cut_test))
        gains = (bootstrap_best(full_outcomes, weights, cost_at, gamma)
                 - bootstrap_best(rule_outcomes(cut_test_part, cut_rules), weights, cost_at, gamma))
        low, high = np.quantile(gains, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        cut_frontier = staircase(cut_test, gamma)
        reach = bool(full_frontier["cost_per_1k"]) and (not cut_frontier["cost_per_1k"] or
                                                        full_frontier["cost_per_1k"][0] < cut_frontier["cost_per_1k"][0] - 1e-9)
        verdicts.append({
            "tier": name, "cut": cut_fit_part.names, "cut_rules": len(cut_rules), "cost_per_1k_at": cost_at,
            "fit_gain": fit_gain, "accuracy": full_best, "cut_accuracy": cut_best, "gain": full_best - cut_best,
            "gain_interval": [float(low), float(high)], "level": LEVEL, "bootstrap": BOOTSTRAP, "reach": reach,
            "cheapest_cost_per_1k": full_frontier["cost_per_1k"][0] if full_frontier["cost_per_1k"] else None,
            "cut_cheapest_cost_per_1k": cut_frontier["cost_per_1k"][0] if cut_frontier["cost_per_1k"] else None,
            "earns_its_place": bool(reach or low > 0), "cut_frontier": cut_frontier,
        })
    return verdicts


def _chosen_cost(full: dict[str, np.ndarray], cut: dict[str, np.ndarray], gamma: float) -> tuple[float, float | None]:
    """The cost per 1k where the chain's frontier gains most over the cut's on the fit part, among the costs both
    reach (the cheapest of equal gains), and that gain; the chain's cheapest cost and None when they share none."""
    costs = np.unique(full["cost_per_1k"][full["abstention_rate"] <= gamma + 1e-12])
    gains = [(best_within(full, x, gamma) - best_within(cut, x, gamma), -x) for x in costs
             if np.isfinite(best_within(cut, x, gamma))]
    if not gains:
        return float(costs[0]), None
    gain, cost = max(gains)
    return float(-cost), float(gain)
