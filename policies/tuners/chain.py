"""Certify a whole N-tier cascade with abstention as one rule: Learn-then-Test over threshold vectors.

Tiers ``0..K-1`` run cheapest first. Under a rule ``θ = (t_0, …, t_{K-2}, a)`` tier ``k < K-1`` answers a
sample reaching it when its deferral score ``s_k ≤ t_k`` (ties stay; scores compare on
:func:`policies.ties.canonical`'s grid) and hands it on otherwise; the last tier answers when
``s_{K-1} ≤ a`` and otherwise *abstains* (human review). A request costs the tiers it visited.

Learn-then-Test (Angelopoulos, Bates, Candès, Jordan & Lei, "Learn then Test: Calibrating Predictive
Algorithms to Achieve Risk Control", 2021): each rule of a grid fixed on the fit part (:class:`ChainGrid`)
tests "some controlled risk of this rule exceeds its target" with the largest of its per-risk p-values
(:class:`ChainRisks`): error ``error="conditional"`` (default, as in ``AcceptedErrorTuner``: wrong among
answered, ``P(Bin(answered, α) ≤ wrong)``) or ``"joint"`` (wrong per request, ``P(Bin(n, α) ≤ wrong)``),
abstention ``P(Bin(n, γ) ≤ abstained)``, cost Hoeffding-Bentkus on the request cost rescaled to [0, 1].
Bonferroni (each rule at δ/R) or fixed-sequence testing along :meth:`ChainGrid.path` (each at δ, up
to the first failure) holds the family-wise error at δ: *every* passed rule meets every target, together,
with probability ≥ 1-δ over the certify draw, so picking among them keeps it. Per-hop certificates
(:class:`policies.tiers.Cascade`) lose this once earlier thresholds are tuned on the same data.

>>> rng = np.random.default_rng(0)
>>> def draw(n):
...     hard = rng.random((n, 1))
...     return hard + rng.normal(0, 0.1, (n, 3)), rng.random((n, 3)) > hard * np.array([0.4, 0.2, 0.1])
>>> fit_scores, fit_correct = draw(2000)
>>> grid = ChainGrid.from_fit(fit_scores, 5, 0.2, fit_correct=fit_correct, costs=[1.0, 4.0, 20.0])
>>> tuner = ChainTuner(alpha=0.1, max_abstention=0.1, max_cost_per_1k=12000.0, grid=grid)
>>> certificate = tuner.fit(*draw(3000), [1.0, 4.0, 20.0]).certificate_
>>> certificate.holds, len(tuner.rule_), bool((tuner.passed_ == tuner.rule_).all(axis=1).any())
(True, 3, True)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple, Self

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy
from scipy.stats import binom
from sklearn.base import BaseEstimator

from policies.certificate import WITH_PROBABILITY, CertificateBase, InfeasibleTarget
from policies.ties import canonical
from policies.tuners.bounds import clopper_pearson_upper

ErrorForm = Literal["conditional", "joint"]
ERROR_METRIC: dict[str, str] = {"conditional": "answered_error", "joint": "wrong_answer_rate"}
MAX_CELLS = 10_000_000


def apply_chain(scores: ArrayLike, rule: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The tier answering each sample (``-1``: abstained) and the tiers each visited, for one rule
    ``(K,)`` — shapes ``(n,)``, ``(n, K)`` — or many ``(R, K)`` — ``(R, n)``, ``(R, n, K)``.

    >>> apply_chain([[0.1, 0.9], [0.6, 0.2], [0.6, 0.7]], [0.5, 0.6])[0].tolist()
    [0, 1, -1]
    """
    scores, rules = canonical(np.asarray(scores, dtype=float)), canonical(np.asarray(rule, dtype=float))
    if scores.ndim != 2 or rules.shape[-1] != scores.shape[1]:
        raise ValueError(f"scores must be (n, K) and rules (K,) or (R, K), got {scores.shape} and {rules.shape}")
    stay = scores[None] <= np.atleast_2d(rules)[:, None, :]
    answered_by = np.where(stay.any(axis=-1), stay.argmax(axis=-1), -1)
    visited = np.ones_like(stay)
    visited[..., 1:] = np.logical_and.accumulate(~stay[..., :-1], axis=-1)
    return (answered_by[0], visited[0]) if rules.ndim == 1 else (answered_by, visited)


def chain_metrics(scores: ArrayLike, correct: ArrayLike, costs: ArrayLike | None, rule: ArrayLike
                  ) -> dict[str, np.ndarray]:
    """``answered_error`` (wrong among answered; 0 when none is), ``wrong_answer_rate`` (wrong answers
    per request), ``abstention_rate`` and ``cost_per_1k`` of one rule (0-d arrays) or of each of
    ``(R, K)`` rules. ``costs`` per tier ``(K,)`` or per sample ``(n, K)``."""
    answered_by, visited = apply_chain(scores, rule)
    correct = np.asarray(correct, dtype=bool)
    answered = answered_by >= 0
    wrong = answered & ~correct[np.arange(correct.shape[0]), np.maximum(answered_by, 0)]
    count = answered.sum(axis=-1)
    metrics = {"answered_error": np.divide(wrong.sum(axis=-1), count, out=np.zeros(count.shape), where=count > 0),
               "wrong_answer_rate": wrong.mean(axis=-1), "abstention_rate": 1.0 - answered.mean(axis=-1)}
    if costs is not None:
        metrics["cost_per_1k"] = 1000.0 * (visited * np.asarray(costs, dtype=float)).sum(axis=-1).mean(axis=-1)
    return metrics


def hoeffding_bentkus_p_value(mean_loss: ArrayLike, n: ArrayLike, level: ArrayLike, log: bool = False) -> np.ndarray:
    """p-value (or its log) of "the mean of a loss in [0, 1] exceeds ``level``" from ``n`` i.i.d. losses
    averaging ``mean_loss``: ``min(exp(-n·h(min(mean, level), level)), e·P(Bin(n, level) ≤ ⌈n·mean⌉))``
    (Bates et al., "Distribution-free, risk-controlling prediction sets", 2021; Learn then Test, §3).

    >>> hoeffding_bentkus_p_value([0.1, 0.2], 500, 0.2).round(9).tolist()
    [3e-09, 1.0]
    """
    mean, n, level = np.clip(np.asarray(mean_loss, dtype=float), 0, 1), np.asarray(n, float), np.asarray(level, float)
    low = np.minimum(mean, inside := np.clip(level, 1e-12, 1 - 1e-12))
    hoeffding = -n * (xlogy(low, low / inside) + xlogy(1 - low, (1 - low) / (1 - inside)))
    bentkus = 1.0 + binom.logcdf(np.ceil(n * mean - 1e-9), n, inside)
    log_p = np.where(level >= 1, -np.inf, np.where(level <= 0, 0.0, np.minimum(np.minimum(hoeffding, bentkus), 0.0)))
    return log_p if log else np.exp(log_p)


class ChainCounts(NamedTuple):
    """Per certify set (rows) and grid rule (columns): requests answered, answered wrongly, total cost."""

    n: int
    answered: np.ndarray
    wrong: np.ndarray
    cost: np.ndarray | None


class ChainRisks(NamedTuple):
    """What is controlled: error ≤ ``alpha``, abstention ≤ ``max_abstention``, cost per 1k ≤ ``max_cost_per_1k``
    (None: not controlled); ``cost_range``: the least and most one request can cost, fixed before the data."""

    alpha: float
    max_abstention: float | None = None
    max_cost_per_1k: float | None = None
    error: ErrorForm = "conditional"
    cost_range: tuple[float, float] = (0.0, 1.0)

    @property
    def targets(self) -> dict[str, float]:
        targets = {ERROR_METRIC[self.error]: self.alpha, "abstention_rate": self.max_abstention,
                   "cost_per_1k": self.max_cost_per_1k}
        return {metric: float(value) for metric, value in targets.items() if value is not None}

    def log_p_values(self, counts: ChainCounts) -> dict[str, np.ndarray]:
        """Log p-value per controlled metric, ``(m, R)`` each; a rule's is their maximum."""
        n, least, most = counts.n, *self.cost_range
        log_p = {ERROR_METRIC[self.error]: binom.logcdf(counts.wrong, self._trials(counts), self.alpha)}
        if self.max_abstention is not None:
            log_p["abstention_rate"] = binom.logcdf(n - counts.answered, n, self.max_abstention)
        if self.max_cost_per_1k is not None:
            level = (self.max_cost_per_1k / 1000 - least) / (most - least)
            log_p["cost_per_1k"] = hoeffding_bentkus_p_value((counts.cost / n - least) / (most - least), n, level,
                                                             log=True)
        return log_p

    def upper_bounds(self, counts: ChainCounts, level: float) -> dict[str, np.ndarray]:
        """Per controlled metric, the smallest target its test passes at ``level`` (an upper confidence bound)."""
        n, least, most = counts.n, *self.cost_range
        bounds = {ERROR_METRIC[self.error]: clopper_pearson_upper(counts.wrong, self._trials(counts), level)}
        if self.max_abstention is not None:
            bounds["abstention_rate"] = clopper_pearson_upper(n - counts.answered, n, level)
        if self.max_cost_per_1k is not None:
            mean = (counts.cost / n - least) / (most - least)
            below, above = np.clip(mean, 0.0, 1.0), np.ones_like(mean)
            for _ in range(60):   # bisection: the p-value falls as the level rises
                middle = (below + above) / 2
                passes = hoeffding_bentkus_p_value(mean, n, middle, log=True) <= math.log(level)
                above, below = np.where(passes, middle, above), np.where(passes, below, middle)
            bounds["cost_per_1k"] = 1000.0 * (least + (most - least) * above)
        return bounds

    def _trials(self, counts: ChainCounts) -> np.ndarray:
        return counts.answered if self.error == "conditional" else np.full_like(counts.answered, counts.n)


@dataclass(frozen=True, eq=False)
class ChainGrid:
    """Candidate rules ``thresholds`` ``(R, K)`` (columns ``t_0 … t_{K-2}, a``), fixed before the certify
    part is seen, and ``fit``: the fit part's counts of every rule, which :meth:`path` orders by."""

    thresholds: np.ndarray
    fit: ChainCounts | None = None

    def __post_init__(self) -> None:
        thresholds = canonical(np.atleast_2d(np.asarray(self.thresholds, dtype=float)))
        if thresholds.ndim != 2 or thresholds.shape[1] < 2 or np.isnan(thresholds).any():
            raise ValueError(f"a chain grid is (rules, K ≥ 2) thresholds without NaN, got {thresholds.shape}")
        if math.prod(len(np.unique(column)) + 1 for column in thresholds.T) > MAX_CELLS:
            raise ValueError(f"too many distinct thresholds per tier: over {MAX_CELLS} score cells to count")
        object.__setattr__(self, "thresholds", thresholds)

    @classmethod
    def from_fit(cls, fit_scores: ArrayLike, n_per_tier: int | list[int] = 5, abstention_span: float = 0.2, *,
                 fit_correct: ArrayLike | None = None, costs: ArrayLike | None = None,
                 max_rules: int = 10_000) -> ChainGrid:
        """The product grid placed on the fit part's scores ``(n, K)``.

        Hop ``k`` takes ``n_per_tier`` thresholds at fit-score quantiles ``0, 1/(n-1), …, 1``, the ends
        being ``-inf`` (hand all on) and ``+inf`` (hand none on; the later thresholds no sample reaches
        become ``+inf``, copies dropped); the abstention threshold at ``1 - abstention_span · j/(n-1)``,
        from ``+inf`` (never abstain) to about ``abstention_span`` abstained. With ``fit_correct`` (and
        ``costs``) the grid keeps the fit part's counts for :meth:`path`. Above 1000 rules it warns
        (Bonferroni would test each at δ/R); above ``max_rules`` it refuses.
        """
        scores = canonical(np.atleast_2d(np.asarray(fit_scores, dtype=float)))
        k = scores.shape[-1]
        sizes = [n_per_tier] * k if isinstance(n_per_tier, int) else list(n_per_tier)
        if scores.ndim != 2 or k < 2 or len(sizes) != k or min(sizes) < 2 or not 0 <= abstention_span <= 1:
            raise ValueError(f"need fit_scores (n, K ≥ 2), n_per_tier ≥ 2 for each of the K tiers and "
                             f"abstention_span in [0, 1], got {scores.shape}, {n_per_tier}, {abstention_span}")
        levels = [np.linspace(0, 1, size) for size in sizes[:-1]]
        levels.append(1 - abstention_span * np.linspace(0, 1, sizes[-1]) if abstention_span > 0 else np.ones(1))
        per_tier = [np.unique(np.where(q <= 0, -np.inf, np.where(q >= 1, np.inf, np.quantile(
            column, np.clip(q, 0, 1), method="inverted_cdf")))) for q, column in zip(levels, scores.T)]
        rules = np.stack(np.meshgrid(*per_tier, indexing="ij"), axis=-1).reshape(-1, k)
        after_answer_all = np.logical_or.accumulate(np.isposinf(rules[:, :-1]), axis=1)
        rules[:, 1:][after_answer_all] = np.inf   # thresholds no sample reaches: one rule, not many alike
        rules = np.unique(rules, axis=0)
        if len(rules) > max_rules:
            raise ValueError(f"the grid has {len(rules)} rules, above max_rules={max_rules}: fewer thresholds per tier")
        if len(rules) > 1000:
            warnings.warn(f"a chain grid of {len(rules)} rules: method='bonferroni' would test each at δ/{len(rules)} "
                          "(fixed-sequence testing, the default, is not diluted by the grid's size)", stacklevel=2)
        return cls(rules) if fit_correct is None else cls(rules, cls(rules).counts(scores, fit_correct, costs))

    def counts(self, scores: ArrayLike, correct: ArrayLike, costs: ArrayLike | None = None) -> ChainCounts:
        """Every rule's counts on each certify set (``scores``, ``correct``: ``(m, n, K)`` or ``(n, K)``; ``costs``
        per tier or per sample): samples binned by where each score falls among its tier's thresholds
        (``C`` cells), then orthant sums of the bins, in ``O(m·n·K + m·C·K² + m·R·K)``."""
        scores = canonical(np.asarray(scores, dtype=float))
        scores = scores[None] if scores.ndim == 2 else scores
        m, n, k = scores.shape
        values = [np.unique(column) for column in self.thresholds.T]
        rules = np.column_stack([np.searchsorted(v, column) for v, column in zip(values, self.thresholds.T)])
        shape = (m, *(len(v) + 1 for v in values))
        bins = [np.searchsorted(v, scores[..., t]) for t, v in enumerate(values)]   # s ≤ v[j] iff bin ≤ j
        flat = np.ravel_multi_index((np.broadcast_to(np.arange(m)[:, None], (m, n)), *bins), shape).ravel()

        def histogram(weights: np.ndarray | None) -> np.ndarray:
            weights = None if weights is None else np.broadcast_to(weights, (m, n)).ravel().astype(float)
            return np.bincount(flat, weights, minlength=math.prod(shape)).reshape(shape)

        def reaching(hist: np.ndarray, tier: int, answered: bool) -> np.ndarray:
            """Per rule, the samples (weighted) reaching ``tier`` and, if ``answered``, answered there."""
            hist = hist.sum(axis=tuple(range(tier + 1 + answered, k + 1)))
            for axis in range(1, tier + 1):   # handed on by each earlier tier: bin > j
                hist = np.flip(np.cumsum(np.flip(hist, axis), axis=axis), axis)
            index = [rules[:, t] + 1 for t in range(tier)]
            if answered:
                hist, index = np.cumsum(hist, axis=tier + 1), [*index, rules[:, tier]]
            return np.broadcast_to(hist[(slice(None), *index)].reshape(m, -1), (m, len(rules)))

        population = histogram(None)
        wrong = ~np.broadcast_to(np.asarray(correct, dtype=bool), scores.shape)
        answered = sum(reaching(population, t, True) for t in range(k))
        wrong_count = sum(reaching(histogram(wrong[..., t]), t, True) for t in range(k))
        cost, costs = None, None if costs is None else np.asarray(costs, dtype=float)
        if costs is not None and costs.ndim == 1:
            cost = sum(costs[t] * reaching(population, t, False) for t in range(k))
        elif costs is not None:
            per_sample = np.broadcast_to(costs, scores.shape)
            cost = sum(reaching(histogram(per_sample[..., t]), t, False) for t in range(k))
        return ChainCounts(n, answered, wrong_count, cost)

    def path(self, risks: ChainRisks) -> np.ndarray:
        """The fixed-sequence order, from the fit part only: rules by their fit-part p-value (largest over
        the controlled risks), most clearly passing first, ties cheapest first (the ordering of Pareto
        testing, Laufer-Goldshtein et al., ICLR 2023)."""
        if self.fit is None or (risks.max_cost_per_1k is not None and self.fit.cost is None):
            raise ValueError("fixed-sequence testing orders the grid by fit-part outcomes: build it with "
                             "ChainGrid.from_fit(..., fit_correct=..., costs=...), or use method='bonferroni'")
        log_p = np.max(list(risks.log_p_values(self.fit).values()), axis=0)[0]
        cost = np.zeros(len(log_p)) if self.fit.cost is None else self.fit.cost[0]
        return np.lexsort((cost, log_p))


class ChainCertificate(CertificateBase):
    """What a :class:`ChainTuner` certifies of the ``rule`` (``t_0 … t_{K-2}, a``) it picked; ``passed_rules``
    hold together (serving may move among them); ``cost_range`` bounds one request's cost (None: uncontrolled)."""

    kind: Literal["chain"] = "chain"
    rule: list[float]
    delta: float
    error: ErrorForm
    cost_range: tuple[float, float] | None
    passed_rules: list[list[float]]


class ChainTuner(BaseEstimator):
    """Error ≤ ``alpha``, abstention ≤ ``max_abstention``, cost per 1k ≤ ``max_cost_per_1k`` for the whole
    chain, jointly with probability ≥ 1-``delta`` (Learn-then-Test over ``grid``; see the module).

    Picks the passed rule cheapest on the certify part (ties: fewer abstentions, then fewer wrong answers).
    ``max_request_cost`` bounds one request's cost (default with costs per tier: all tiers'; the least is
    then tier 0's). Sets ``rule_``, ``passed_``, ``p_values_``, ``path_`` (Bonferroni: None), ``certificate_``.
    """

    def __init__(self, alpha: float = 0.05, max_abstention: float | None = None, max_cost_per_1k: float | None = None,
                 delta: float = 0.1, grid: ChainGrid | None = None,
                 method: Literal["fixed-sequence", "bonferroni"] = "fixed-sequence", error: ErrorForm = "conditional",
                 max_request_cost: float | None = None) -> None:
        self.alpha, self.max_abstention, self.max_cost_per_1k = alpha, max_abstention, max_cost_per_1k
        self.delta, self.grid, self.method, self.error = delta, grid, method, error
        self.max_request_cost = max_request_cost

    def fit(self, scores: ArrayLike, correct: ArrayLike, costs: ArrayLike, *, part: str = "certify") -> Self:
        """Test every grid rule on one certify set ``(n, K)``; ``costs`` per tier ``(K,)`` or per sample."""
        risks, counts, passed, log_p, path = self._test(scores, correct, costs)
        n, level, chosen = counts.n, self._level(), int(self._choose(counts, passed)[0])
        bounds = {metric: values[0] for metric, values in risks.upper_bounds(counts, level).items()}
        if chosen < 0:
            raise self._infeasible(risks, counts, level, bounds)
        rules = self._grid().thresholds
        self.rule_, self.passed_, self.p_values_, self.path_ = rules[chosen], rules[passed[0]], np.exp(log_p[0]), path
        answered, wrong, cost = counts.answered[0, chosen], counts.wrong[0, chosen], counts.cost[0, chosen]
        achieved = {"answered_error": wrong / answered if answered else 0.0, "wrong_answer_rate": wrong / n,
                    "abstention_rate": 1 - answered / n, "cost_per_1k": 1000.0 * cost / n}
        fwer = (f"Bonferroni, each at δ/{len(rules)}" if self.method == "bonferroni"
                else "fixed-sequence along the fit-part path, each at δ, stopping at the first failure")
        events = " or ".join(f"{metric} > {target:g}" for metric, target in risks.targets.items())
        self.certificate_ = ChainCertificate(
            method=f"Learn-then-Test over {len(rules)} chain rules fixed on the fit part (binomial p-values, "
                   f"Hoeffding-Bentkus for cost; {fwer})",
            rule=self.rule_.tolist(), target=risks.targets,
            achieved={metric: float(value) for metric, value in achieved.items()},
            bound={metric: min(float(bounds[metric][chosen]), target) for metric, target in risks.targets.items()},
            guarantee=WITH_PROBABILITY, n=n, delta=self.delta, part=part, error=self.error,
            statement=f"P({events}) ≤ {self.delta} over the draw of the certify part, for the chosen rule and "
                      "every passed rule at once",
            cost_range=risks.cost_range if self.max_cost_per_1k is not None else None,
            passed_rules=self.passed_.tolist())
        return self

    def fit_rules(self, scores: ArrayLike, correct: ArrayLike, costs: ArrayLike) -> np.ndarray:
        """The rule ``(m, K)`` picked on each of ``m`` certify sets ``(m, n, K)``; NaN rows where infeasible."""
        _, counts, passed, _, _ = self._test(scores, correct, costs)
        chosen = self._choose(counts, passed)
        return np.where((chosen >= 0)[:, None], self._grid().thresholds[np.maximum(chosen, 0)], np.nan)

    def _test(self, scores: ArrayLike, correct: ArrayLike, costs: ArrayLike
              ) -> tuple[ChainRisks, ChainCounts, np.ndarray, np.ndarray, np.ndarray | None]:
        k = (grid := self._grid()).thresholds.shape[1]
        scores, correct, costs = np.asarray(scores, float), np.asarray(correct, bool), np.asarray(costs, float)
        if scores.ndim not in (2, 3) or scores.shape[-1] != k or correct.shape != scores.shape or (
                costs.shape != (k,) and costs.shape[-2:] != scores.shape[-2:]):
            raise ValueError(f"scores and correct must be (n, K={k}) or (m, n, K), costs (K,) or per sample; got "
                             f"{scores.shape}, {correct.shape}, {costs.shape}")
        if np.isnan(scores).any() or np.isnan(costs).any() or (costs < 0).any():
            raise ValueError("scores and costs must be numbers, costs non-negative")
        risks = ChainRisks(self.alpha, self.max_abstention, self.max_cost_per_1k, self.error, self._cost_range(costs))
        counts = grid.counts(scores, correct, costs)
        log_p = np.max(list(risks.log_p_values(counts).values()), axis=0)
        if self.method == "bonferroni":
            return risks, counts, log_p <= math.log(self._level()), log_p, None
        path = grid.path(risks)
        passed = np.zeros_like(log_p, dtype=bool)
        passed[:, path] = np.logical_and.accumulate(log_p[:, path] <= math.log(self.delta), axis=1)
        return risks, counts, passed, log_p, path

    def _grid(self) -> ChainGrid:
        checks = {"alpha": 0 < self.alpha <= 1, "delta": 0 < self.delta < 1,
                  "max_abstention": self.max_abstention is None or 0 < self.max_abstention <= 1,
                  "max_cost_per_1k": self.max_cost_per_1k is None or self.max_cost_per_1k > 0,
                  "method": self.method in ("fixed-sequence", "bonferroni"), "error": self.error in ERROR_METRIC}
        for name in (name for name, ok in checks.items() if not ok):
            raise ValueError(f"{name}={getattr(self, name)!r} is out of range (rates in (0, 1], method "
                             "'fixed-sequence' or 'bonferroni', error 'conditional' or 'joint')")
        if not isinstance(self.grid, ChainGrid):
            raise ValueError("ChainTuner needs grid: a ChainGrid fixed before the certify part is seen, e.g. "
                             "ChainGrid.from_fit(fit-part scores, fit_correct=..., costs=...)")
        return self.grid

    def _cost_range(self, costs: np.ndarray) -> tuple[float, float]:
        least = float(costs[0]) if costs.ndim == 1 else 0.0
        most = self.max_request_cost if self.max_request_cost is not None else costs.sum() if costs.ndim == 1 else None
        if self.max_cost_per_1k is not None and (most is None or most <= least):
            raise ValueError("cost control needs max_request_cost (with per-sample costs: the most one request can "
                             "cost through every tier, fixed before the data are seen) above the least a request costs")
        if most is not None and (dearest := float(costs.sum(axis=-1).max())) > most:
            raise ValueError(f"a request through every tier costs up to {dearest:.6g}, above max_request_cost={most}")
        return least, math.inf if most is None else float(most)

    def _level(self) -> float:
        return self.delta / len(self._grid().thresholds) if self.method == "bonferroni" else self.delta

    @staticmethod
    def _choose(counts: ChainCounts, passed: np.ndarray) -> np.ndarray:
        order = np.lexsort((counts.wrong, -counts.answered, counts.cost, ~passed), axis=1)[:, 0]
        return np.where(passed.any(axis=1), order, -1)

    def _infeasible(self, risks: ChainRisks, counts: ChainCounts, level: float, bounds: dict[str, np.ndarray]
                    ) -> InfeasibleTarget:
        passes = {metric: values[0] <= math.log(level) for metric, values in risks.log_p_values(counts).items()}
        best = {}
        for metric, bound in bounds.items():
            others = np.logical_and.reduce([ok | (other == metric) for other, ok in passes.items()])
            best[metric] = float(bound[others].min()) if others.any() else math.nan
        wanted = " with ".join(f"{metric} ≤ {target:g}" for metric, target in risks.targets.items())
        found = "; ".join(f"{metric} {value:.4g}" for metric, value in best.items())
        return InfeasibleTarget(f"{wanted} cannot be certified at δ={self.delta} with n={counts.n} ({self.method}): "
                                f"the lowest certifiable values among the tested rules where the other targets pass "
                                f"(nan: none) are {found}", best)
