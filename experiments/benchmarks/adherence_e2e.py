"""End-to-end budget adherence: refit calibrator, policy and tuner on every split, measure on untouched data.

Each split cuts a pool of *raw* (uncalibrated) detector outputs at random into fit / certify /
test parts. The calibrator (``cascade.calibration``, isotonic by default, whose plateaus tie many
scores) and the deferral policy are fitted on the fit part; the tuner places its Learn-then-Test
grid on the fit part and certifies on the certify part, breaking ties with per-sample keys; the
rule is measured on the test part, which nothing was fitted on.

The measured violation rates are compared with the exact finite-sample null, not a padded
tolerance. For a deferral-rate rule that defers ``k`` of ``n`` certify samples (scores distinct
after tie-breaking), the share of the pool above it is ``Beta(k+1, n-k)`` and the number of the
``m`` test samples it defers is ``BetaBinomial(m, k+1, n-k)``, exactly, for any exchangeable
pool; so "the test part's rate exceeds β" has a known probability per split. For the
accepted-error and joint guarantees the null is the bound ``δ + (1-δ) P(Bin(a, α) > αa)`` with
``a`` the test part's accepted count (the worst case allowed: true error exactly ``α``), which
finite real test parts make loose. Simulated data have a known error probability per sample, so
there every split's test part is a fresh 20,000-sample draw scored with those probabilities, the
measured accepted error is the rule's true one up to ~0.002, and its violation rate must stay
within Binomial(splits, δ).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist, betabinom, binom

from cascade.calibration import make_calibrator
from policies import BudgetTuner, RateTuner, make_policy
from policies.ties import defer_mask

QUANTILE = 0.999
TunerFactory = Callable[[np.ndarray, np.ndarray], BudgetTuner]
"""builds a tuner from the fit part's policy scores and tie keys (where a Learn-then-Test grid goes)"""


@dataclass(frozen=True)
class RawPool:
    """Held-out samples before calibration: raw detector probabilities and what each tier gets right."""

    raw_probs: np.ndarray
    y: np.ndarray
    expert_correct: np.ndarray
    expert_cost: np.ndarray
    tie_keys: np.ndarray
    true_probabilities: bool = False
    """``raw_probs`` are the true class probabilities (simulated data): the small tier's chance of being
    wrong is known per sample, so a test part can measure expected rather than sampled errors"""

    def __len__(self) -> int:
        return len(self.y)


def run_splits(pool: RawPool | Callable[[int], RawPool], tuners: dict[str, TunerFactory], sizes: tuple[int, int],
               splits: int, seed: int = 0, calibrator: str = "isotonic", policy: str = "confidence",
               population: Callable[[int], RawPool] | None = None) -> list[dict[str, Any]]:
    """Per tuner: realised metrics on each split's test part, refusals, and the exact null.

    ``pool`` is a finite pool cut at random on every split, or (simulated data) a function drawing
    a fresh fit + certify sample for split ``i``; with ``population`` (drawing a fresh sample with
    ``true_probabilities`` for split ``i``) the test part is that sample rather than the rest of the pool.
    """
    n_fit, n_certify = sizes
    rng = np.random.default_rng(seed)
    records: dict[str, dict[str, list[Any]]] = {name: {"realised": [], "deferred": [], "accepted": []}
                                                 for name in tuners}
    made: dict[str, BudgetTuner] = {}
    for split in range(splits):
        drawn = pool(split) if callable(pool) else pool
        order = np.arange(len(drawn)) if callable(pool) else rng.permutation(len(drawn))
        fit, certify, test = order[:n_fit], order[n_fit:n_fit + n_certify], order[n_fit + n_certify:]
        n_classes = drawn.raw_probs.shape[1]
        calibrated = make_calibrator(calibrator).fit(drawn.raw_probs[fit], drawn.y[fit])
        probs = calibrated.transform(drawn.raw_probs)
        small_correct = probs.argmax(axis=1) == drawn.y
        chosen = make_policy(policy, n_classes=n_classes)
        scores = chosen.fit(probs[fit], small_correct[fit], drawn.expert_correct[fit]).score(probs)
        keys = drawn.tie_keys
        if population is not None:
            tested = population(split)
            population_probs = calibrated.transform(tested.raw_probs)
            population_scores = chosen.score(population_probs)
        for name, build in tuners.items():
            tuner = made[name] = build(scores[fit], keys[fit])
            cut = tuner.fit_cuts(scores[certify], small_correct[certify], drawn.expert_cost[certify], keys[certify])
            if population is None:
                realised = tuner.evaluate(scores[test], cut.threshold, small_correct[test], drawn.expert_cost[test],
                                          tie_breaks=cut.tie_break, tie_keys=keys[test])
            else:
                realised = expected_metrics(tuner, tested, population_probs, population_scores, cut)
            refused = bool(np.isnan(cut.threshold[0]))
            record = records[name]
            record["realised"].append({m: math.nan if refused else float(realised[m][0]) for m in tuner.targets})
            record["deferred"].append(int(defer_mask(scores[certify], cut.threshold[0], cut.tie_break[0],
                                                     keys[certify]).sum()))
            size = len(test) if population is None else len(tested)
            record["accepted"].append(int(size - round(float(realised["defer_rate"][0]) * size)))
    m = len(drawn) - n_fit - n_certify if population is None else len(tested)
    return [summarise(name, made[name], records[name], n_certify, m, population is not None) for name in tuners]


def expected_metrics(tuner: BudgetTuner, population: RawPool, probs: np.ndarray, scores: np.ndarray,
                     cut: Any) -> dict[str, np.ndarray]:
    """The rule's deferral rate, cost and *expected* accepted error on a population with known error odds."""
    if not population.true_probabilities:
        raise ValueError("expected metrics need a population whose raw_probs are the true class probabilities")
    defer = defer_mask(scores, cut.threshold[0], cut.tie_break[0], population.tie_keys)
    predicted = probs.argmax(axis=1)
    wrong = 1.0 - np.take_along_axis(population.raw_probs, predicted[:, None], axis=1)[:, 0]
    accepted = ~defer
    count = accepted.sum()
    return {"defer_rate": np.array([defer.mean()]),
            "accepted_error": np.array([wrong[accepted].sum() / count if count else 0.0]),
            "cost_per_1k": np.array([1000.0 * (tuner._cost_per_request() + (population.expert_cost * defer).mean())])}


def summarise(name: str, tuner: BudgetTuner, record: dict[str, list[Any]], n: int, m: int,
              known_errors: bool = False) -> dict[str, Any]:
    """Means, violation rate and the exact null for one tuner over the splits."""
    realised = {metric: np.array([row[metric] for row in record["realised"]]) for metric in tuner.targets}
    refused = np.isnan(next(iter(realised.values())))
    splits = len(refused)
    violated = np.any([np.nan_to_num(values, nan=-np.inf) > tuner.targets[metric]
                       for metric, values in realised.items()], axis=0)
    metrics = {}
    for metric, target in tuner.targets.items():
        values = realised[metric][~refused]
        error = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan
        metrics[metric] = {"target": target, "mean": float(values.mean()) if len(values) else math.nan,
                           "standard_error": error}
    row: dict[str, Any] = {"tuner": name, "guarantee": tuner.guarantee, "delta": tuner.delta, "splits": splits,
                           "certify": n, "test": m, "refusal_rate": float(refused.mean()),
                           "violation_rate": float(violated.mean()), "metrics": metrics}
    row.update(null(tuner, record, n, m, refused, splits, known_errors))
    return row


def null(tuner: BudgetTuner, record: dict[str, list[Any]], n: int, m: int, refused: np.ndarray,
         splits: int, known_errors: bool = False) -> dict[str, Any]:
    """The exact null of this tuner's test-part outcomes, and whether the measurement is consistent with it."""
    measured = float(np.mean([any(v > tuner.targets[k] for k, v in r.items() if not math.isnan(v))
                              for r in record["realised"]]))
    if isinstance(tuner, RateTuner):
        deferred = np.array(record["deferred"])[~refused]
        k = int(np.round(deferred.mean()))
        beta = tuner.target
        if tuner.delta is None:
            expected = (k + 1) / (n + 1)
            stats = {"kind": "exact mean", "certify_deferred": k, "expected": expected}
            mean = tuner_mean(record, "defer_rate")
            stats["pass"] = bool(0.9 * beta <= mean["mean"] <= beta + 3 * mean["standard_error"])
            return {"null": stats}
        population = float(beta_dist.sf(beta, k + 1, n - k))
        per_split = float(betabinom.sf(math.floor(beta * m + 1e-9), m, k + 1, n - k))
        low, high = binom.ppf([1 - QUANTILE, QUANTILE], splits, per_split) / splits
        return {"null": {"kind": "beta-binomial", "certify_deferred": k, "population_violation": population,
                         "expected": per_split, "interval": [float(low), float(high)],
                         "pass": bool(population <= tuner.delta and measured <= high)}}
    if tuner.delta is None:
        mean = tuner_mean(record, next(iter(tuner.targets)))
        target = next(iter(tuner.targets.values()))
        return {"null": {"kind": "mean", "pass": bool(mean["mean"] <= target + 3 * mean["standard_error"])}}
    if known_errors:
        high = float(binom.ppf(QUANTILE, splits, tuner.delta) / splits)
        return {"null": {"kind": "population", "expected": tuner.delta, "interval": [0.0, high],
                         "pass": bool(measured <= high)}}
    accepted = np.array(record["accepted"])[~refused]
    alpha = tuner.targets["accepted_error"]
    noise = binom.sf(np.floor(alpha * accepted + 1e-9), accepted, alpha)
    if "defer_rate" in tuner.targets:
        rate = tuner.targets["defer_rate"]
        noise = noise + binom.sf(math.floor(rate * m + 1e-9), m, rate)
    bound = float(tuner.delta + (1 - tuner.delta) * np.minimum(noise, 1.0).mean()) if len(accepted) else 0.0
    high = float(binom.ppf(QUANTILE, splits, min(bound, 1.0)) / splits)
    return {"null": {"kind": "bound", "expected": bound, "interval": [0.0, high], "pass": bool(measured <= high)}}


def tuner_mean(record: dict[str, list[Any]], metric: str) -> dict[str, float]:
    values = np.array([row[metric] for row in record["realised"]])
    values = values[~np.isnan(values)]
    return {"mean": float(values.mean()), "standard_error": float(values.std(ddof=1) / np.sqrt(len(values)))}


def null_cell(null: dict[str, Any]) -> str:
    """The null column of the markdown table."""
    if null["kind"] == "beta-binomial":
        return (f"expected {null['expected']:.4f} [{null['interval'][0]:.4f}, {null['interval'][1]:.4f}]; "
                f"k={null['certify_deferred']}, P(rate > β) = {null['population_violation']:.4f}")
    if null["kind"] == "exact mean":
        return f"mean (k+1)/(n+1) = {null['expected']:.4f}, k={null['certify_deferred']}"
    if null["kind"] == "population":
        return f"≤ δ = {null['expected']:g} (allowed ≤ {null['interval'][1]:.4f})"
    if null["kind"] == "bound":
        return f"≤ {null['expected']:.4f} (allowed ≤ {null['interval'][1]:.4f})"
    return "mean ≤ target + 3 s.e."
