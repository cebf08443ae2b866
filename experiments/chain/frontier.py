"""Chain rules on one part: their metrics, the Pareto set, the frontier at an abstention bound, and the
oracle and random-routing baselines. Pure numpy over cached scores.

A rule ``(t_0, …, t_{K-2}, a)`` is applied by :func:`policies.tuners.chain.apply_chain`. The *frontier at
abstention ≤ γ* is, at each cost per 1k, the best accuracy of answered samples among the rules that cost at
most that and abstain on at most γ (a staircase over the rules' points).

>>> rules = np.array([[0.5, np.inf], [np.inf, np.inf], [-np.inf, 0.5]])
>>> scores, correct = np.array([[0.2, 0.1], [0.7, 0.9]]), np.array([[True, True], [False, True]])
>>> metrics = rule_metrics(scores, correct, np.array([[0.0, 1.0]] * 2), rules)
>>> metrics["accuracy"].tolist(), metrics["cost_per_1k"].tolist(), metrics["share_small"].tolist()
([1.0, 0.5, 1.0], [500.0, 0.0, 1000.0], [0.5, 1.0, 0.0])
>>> staircase(metrics, 0.0)
{'cost_per_1k': [0.0, 500.0], 'accuracy': [0.5, 1.0]}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.tuners.chain import apply_chain

RULE_CHUNK = 256
"""rules applied at once (memory: rules × samples × tiers booleans)"""


def rule_metrics(scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, rules: np.ndarray,
                 names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Per rule ``(R,)``: ``accuracy`` of the answered samples (1 when none is), ``answered_error``,
    ``abstention_rate``, ``cost_per_1k`` and ``share_<tier>``, the share each tier answers (``names``, default
    ``small``, ``tier1``, …)."""
    names = names or ["small", *(f"tier{k}" for k in range(1, scores.shape[1]))]
    rows = np.arange(len(scores))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(rules), RULE_CHUNK):
        answered_by, visited = apply_chain(scores, np.atleast_2d(rules[start:start + RULE_CHUNK]))
        answered = answered_by >= 0
        wrong = answered & ~correct[rows, np.maximum(answered_by, 0)]
        count = answered.sum(axis=1)
        chunk = {"answered_error": np.divide(wrong.sum(axis=1), count, out=np.zeros(len(count)), where=count > 0),
                 "abstention_rate": 1.0 - answered.mean(axis=1),
                 "cost_per_1k": 1000.0 * (visited * costs).sum(axis=2).mean(axis=1),
                 **{f"share_{name}": (answered_by == k).mean(axis=1) for k, name in enumerate(names)}}
        for key, value in chunk.items():
            parts.setdefault(key, []).append(value)
    metrics = {key: np.concatenate(values) for key, values in parts.items()}
    metrics["accuracy"] = 1.0 - metrics["answered_error"]
    return metrics


def pareto_mask(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """Rules no other rule beats: none costs no more, errs no more among the answered and abstains no more,
    and is better in one of them. Duplicate points keep their first rule.

    >>> pareto_mask({"cost_per_1k": np.array([1.0, 2.0, 2.0, 0.5]), "answered_error": np.array([0.1, 0.05, 0.2, 0.1]),
    ...              "abstention_rate": np.zeros(4)}).tolist()
    [False, True, False, True]
    """
    points = np.column_stack([metrics["cost_per_1k"], metrics["answered_error"], metrics["abstention_rate"]])
    points = np.round(points, 12)
    keep = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), RULE_CHUNK):
        block = points[start:start + RULE_CHUNK, None, :]
        no_worse = (points[None] <= block).all(axis=2)
        better = no_worse & (points[None] < block).any(axis=2)
        same_before = (points[None] == block).all(axis=2) & (np.arange(len(points))[None] < np.arange(
            start, start + len(block))[:, None])
        keep[start:start + len(block)] = ~(better | same_before).any(axis=1)
    return keep


def staircase(metrics: dict[str, np.ndarray], max_abstention: float) -> dict[str, list[float]]:
    """The frontier at abstention ≤ ``max_abstention``: the points where the best accuracy of answered samples
    at a cost per 1k of at most ``cost_per_1k`` rises (cheapest first)."""
    allowed = metrics["abstention_rate"] <= max_abstention + 1e-12
    cost, accuracy = metrics["cost_per_1k"][allowed], metrics["accuracy"][allowed]
    order = np.lexsort((-accuracy, cost))
    cost, accuracy = cost[order], accuracy[order]
    best = np.maximum.accumulate(accuracy) if len(accuracy) else accuracy
    rises = np.r_[True, best[1:] > best[:-1]] if len(best) else np.zeros(0, dtype=bool)
    return {"cost_per_1k": cost[rises].tolist(), "accuracy": best[rises].tolist()}


def best_within(metrics: dict[str, np.ndarray], max_cost_per_1k: float, max_abstention: float) -> float:
    """The best accuracy of answered samples among rules within both bounds (``-inf`` where none is)."""
    allowed = (metrics["cost_per_1k"] <= max_cost_per_1k + 1e-9) & (metrics["abstention_rate"] <= max_abstention + 1e-12)
    return float(metrics["accuracy"][allowed].max()) if allowed.any() else -np.inf


def oracle(correct: np.ndarray, costs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The cheapest tier that is right answers (tiers visited in order up to it); abstain only where none is
    (after visiting every tier)."""
    right = correct.any(axis=1)
    answered_by = np.where(right, correct.argmax(axis=1), -1)
    visited = np.arange(correct.shape[1])[None] <= np.where(right, answered_by, correct.shape[1] - 1)[:, None]
    return {"accuracy": 1.0, "abstention_rate": float(1 - right.mean()),
            "cost_per_1k": float(1000 * (visited * costs).sum(axis=1).mean()),
            **{f"share_{name}": float(np.mean(answered_by == k)) for k, name in enumerate(names)}}


def random_routing(correct: np.ndarray, costs: np.ndarray, shares: np.ndarray, seeds: int) -> dict[str, float]:
    """Random routing with a rule's answer shares ``(K + 1,)`` (each tier's, then abstained): a seeded uniform
    draw of samples answers at each tier in those numbers, visiting every tier before it; the mean over
    ``seeds`` draws of accuracy of answered, abstention and cost per 1k (the rule's, in expectation, with
    constant prices)."""
    n, k = correct.shape
    counts = np.floor(np.asarray(shares) * n + 0.5).astype(int)
    counts[-1] = n - counts[:-1].sum()
    assigned = np.repeat(np.r_[np.arange(k), -1], counts)
    accuracy, cost = [], []
    for seed in range(seeds):
        answered_by = np.random.default_rng(seed).permutation(assigned)
        answered = answered_by >= 0
        right = correct[np.arange(n), np.maximum(answered_by, 0)] & answered
        accuracy.append(right.sum() / answered.sum() if answered.any() else 1.0)
        last = np.where(answered, answered_by, k - 1)
        cost.append(1000 * ((np.arange(k)[None] <= last[:, None]) * costs).sum(axis=1).mean())
    return {"accuracy": float(np.mean(accuracy)), "abstention_rate": float(counts[-1] / n),
            "cost_per_1k": float(np.mean(cost))}


def shares_of(row: dict[str, Any], names: list[str]) -> np.ndarray:
    """A rule's answer shares ``(K + 1,)``: each tier's, then abstained."""
    return np.array([*(row[f"share_{name}"] for name in names), row["abstention_rate"]])


def rule_rows(metrics: dict[str, np.ndarray], rules: np.ndarray, mask: np.ndarray) -> list[dict[str, Any]]:
    """The rules in ``mask`` with their metrics, cheapest first (thresholds ±inf as strings, for JSON)."""
    index = np.flatnonzero(mask)
    index = index[np.argsort(metrics["cost_per_1k"][index], kind="stable")]
    return [{"rule": [_number(value) for value in rules[i]],
             **{key: float(values[i]) for key, values in metrics.items()}} for i in index]


def _number(value: float) -> float | str:
    return float(value) if np.isfinite(value) else ("inf" if value > 0 else "-inf")
