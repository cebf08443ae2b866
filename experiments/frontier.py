"""Scalars that summarise a cost-quality curve: the monotone upper hull, AIQ, PGR/APGR and CPT.

Definitions (following RouterBench and RouteLLM):

* **hull**: the upper concave hull of the (cost, quality) points, made non-decreasing — the best
  quality reachable at each cost by mixing two operating points at random.
* **AIQ** (average improvement in quality): the area under the hull over the cost range, divided
  by that range, i.e. the hull's mean quality.
* **PGR(r)** (performance gap recovered): ``(q(r) - q_small) / (q_expert - q_small)`` at deferral
  rate r; **APGR** is its area over r in [0, 1]. Undefined (NaN) when the expert is no better
  than the small tier: then there is no gap to recover.
* **CPT(x%)** (call-performance threshold): the smallest deferral rate whose PGR reaches x%.

>>> upper_hull(np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.6, 0.9]))[1].tolist()
[0.5, 0.7, 0.9]
"""

from __future__ import annotations

import numpy as np


def upper_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper concave hull, evaluated at the input costs (sorted)."""
    order = np.lexsort((-np.asarray(quality), np.asarray(cost)))
    x, q = np.asarray(cost, dtype=float)[order], np.asarray(quality, dtype=float)[order]
    hull: list[int] = []
    for i in range(len(x)):  # Andrew's monotone chain over the points (not over samples)
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (x[b] - x[a]) * (q[i] - q[a]) - (q[b] - q[a]) * (x[i] - x[a]) >= 0:
                hull.pop()
            else:
                break
        if hull and x[hull[-1]] == x[i]:
            continue
        hull.append(i)
    on_hull = np.interp(x, x[hull], q[hull])
    return x, np.maximum.accumulate(on_hull)


def aiq(cost: np.ndarray, quality: np.ndarray) -> float:
    """Mean quality of the non-decreasing hull over the cost range."""
    x, hull = upper_hull(cost, quality)
    span = x[-1] - x[0]
    if span <= 0:
        return float(hull.max())
    return float(np.trapezoid(hull, x) / span)


def pgr(quality: np.ndarray, small_quality: float, expert_quality: float) -> np.ndarray:
    gap = expert_quality - small_quality
    if gap <= 0:
        return np.full(len(quality), np.nan)
    return (np.asarray(quality, dtype=float) - small_quality) / gap


def apgr(defer_rate: np.ndarray, quality: np.ndarray, small_quality: float, expert_quality: float) -> float:
    """Area under PGR over deferral rates in [0, 1] (NaN when the expert is not better)."""
    recovered = pgr(quality, small_quality, expert_quality)
    if np.isnan(recovered).all():
        return float("nan")
    return float(np.trapezoid(recovered, defer_rate))


def cpt(defer_rate: np.ndarray, quality: np.ndarray, small_quality: float, expert_quality: float,
        percent: float) -> float:
    """Smallest deferral rate reaching ``percent`` % PGR (NaN if never reached or undefined)."""
    recovered = pgr(quality, small_quality, expert_quality)
    reached = np.flatnonzero(recovered >= percent / 100.0)
    return float(np.min(np.asarray(defer_rate)[reached])) if len(reached) else float("nan")
