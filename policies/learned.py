"""A learned deferral policy that never does worse than Chow's rule on the data it was fitted on.

Its gain model is :class:`~policies.PosthocPolicy`'s ``"outcomes"`` model: ``P(expert right | x)``
and ``P(small right | x)``, two logistic regressions over :func:`~policies.posthoc.outcome_design`
(the calibrated probabilities, their uncertainties with Chow's score ``1 - max p`` first, any extra
feature columns -- an input view, length, distance to the training data, ... -- and those extras
times Chow's score); the expected gain of deferring is their difference.

``fit`` then chooses what to serve among three candidates, by ``folds``-fold cross-validated
ranking quality on the fitting data -- the area under the accuracy-vs-deferral curve up to
``max_rate``, ties counted at their expected value:

* ``rule``: Chow's score itself (the ranking of :class:`~policies.ConfidencePolicy`);
* ``learned``: the expected gain ``p_expert(x) - p_small(x)``;
* ``blend``: the mean of that and the rule in gain units, ``mean(expert right) - max p``.

A learned candidate is chosen only if its mean per-fold advantage over the rule exceeds
``margin`` standard errors *and* its mean out-of-fold accuracy gain is not below the rule's at any
of the ``guard_rates`` (up to ``max_rate``): a larger area bought by losing at a small budget does
not count. With fewer than ``min_samples`` samples or fewer than ``min_positive`` samples the
expert fixes, the rule is served without trying. When the fitting data mix held-out rows with
cross-fitted training rows, ``fit(..., exchangeable=mask)`` marks the held-out ones: the models learn
from every row, but the candidates are compared on the held-out rows only (drawn like serving traffic). ``choice_`` and
``choice_reason_`` say what was chosen and why; both are saved with the policy.

>>> from policies.simulate import simulate
>>> data = simulate(3000, seed=0)
>>> policy = LearnedPolicy(n_classes=2).fit(data.features, data.small_correct, data.expert_correct)
>>> policy.choice_
'learned'
>>> LearnedPolicy(n_classes=2).fit(data.features[:100], data.small_correct[:100], data.expert_correct[:100]).choice_
'rule'
"""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.model_selection import KFold

from policies.base import PolicyBase, as_features, check_outcomes, class_probabilities
from policies.baselines import deferral_gain
from policies.posthoc import fit_outcome_models, outcome_design, outcome_gain, predict_outcome_gain

Choice = Literal["auto", "rule", "learned", "blend"]
CANDIDATES = ("rule", "learned", "blend")
GUARD_RATES = (0.05, 0.1, 0.2, 0.3)
"""deferral rates at which a learned candidate must not lose to the rule (``guard_rates=None``)"""


class LearnedPolicy(PolicyBase):
    """The post-hoc outcome models' expected gain of deferring, or Chow's rule where learning does not pay.

    ``n_classes``: how many leading feature columns are class probabilities (the rest are extra
    features). ``choice``: ``"auto"`` (cross-validated, see the module docs) or a forced
    candidate. ``margin``: standard errors of cross-validated gain a learned candidate needs;
    ``guard_rates``: deferral rates where it must not lose to the rule (None: 5, 10, 20, 30 %).
    ``regularization`` is the inverse L2 strength of both logistic models.
    """

    kind = "learned"
    _json_state = ("n_features_in_", "choice_", "choice_reason_", "cv_", "n_fit_", "expert_accuracy_")
    _array_state = ("coef_",)
    _optional_state = ("coef_",)  # the rule needs no coefficients

    def __init__(
        self,
        n_classes: int | None = None,
        choice: Choice = "auto",
        folds: int = 5,
        min_samples: int = 200,
        min_positive: int = 20,
        max_rate: float = 0.5,
        margin: float = 2.0,
        guard_rates: list[float] | None = None,
        regularization: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.n_classes = n_classes
        self.choice = choice
        self.folds = folds
        self.min_samples = min_samples
        self.min_positive = min_positive
        self.max_rate = max_rate
        self.margin = margin
        self.guard_rates = guard_rates
        self.regularization = regularization
        self.random_state = random_state

    def fit(
        self,
        features: ArrayLike,
        small_correct: ArrayLike,
        expert_correct: ArrayLike,
        cost: ArrayLike | None = None,
        exchangeable: ArrayLike | None = None,
    ) -> Self:
        """Fit both outcome models and choose rule / learned / blend; ``cost`` is checked, not used.

        ``exchangeable``: a boolean mask of the rows drawn like serving traffic (the held-out fit part,
        as opposed to cross-fitted training rows). The candidates are then cross-validated on those
        rows only, while the models learn from every row; None means every row.
        """
        self._check_params()
        features = as_features(features)
        check_outcomes(len(features), small_correct, expert_correct, cost)
        exchangeable = (np.ones(len(features), dtype=bool) if exchangeable is None
                        else np.asarray(exchangeable, dtype=bool).reshape(-1))
        if len(exchangeable) != len(features):
            raise ValueError(f"exchangeable has {len(exchangeable)} entries, features have {len(features)} rows")
        small = np.asarray(small_correct, dtype=float).reshape(-1)
        expert = np.asarray(expert_correct, dtype=float).reshape(-1)
        self.n_features_in_ = features.shape[1]
        self.n_fit_ = len(features)
        self.expert_accuracy_ = float(expert.mean()) if len(expert) else 0.0
        positives = int(np.sum(deferral_gain(small, expert) > 0))
        self.cv_: dict[str, Any] = {}
        if self.choice == "auto" and len(features) < self.min_samples:
            return self._serve_rule(f"{len(features)} fitting samples < min_samples={self.min_samples}")
        if self.choice == "auto" and positives < self.min_positive:
            return self._serve_rule(f"{positives} samples where the expert fixes the small tier "
                                    f"< min_positive={self.min_positive}")
        if self.choice == "auto" and exchangeable.sum() < self.min_samples:
            return self._serve_rule(f"{int(exchangeable.sum())} samples drawn like serving traffic to choose on "
                                    f"< min_samples={self.min_samples}")
        design = outcome_design(features, self.n_classes)
        if self.choice == "auto":
            self.cv_ = self._cross_validate(design, small, expert, np.flatnonzero(exchangeable))
            choice, reason = self._choose(self.cv_)
        else:
            choice, reason = self.choice, "forced by the 'choice' parameter"
        if choice == "rule":
            return self._serve_rule(reason)
        self.coef_ = fit_outcome_models(design, small, expert, self.regularization)
        self.choice_, self.choice_reason_ = choice, reason
        return self

    def score(self, features: ArrayLike) -> np.ndarray:
        """The chosen candidate's score; higher means defer first."""
        self._check_fitted()
        features = self._features(features)
        probabilities = class_probabilities(features, self.n_classes)
        top = probabilities.max(axis=1)
        if self.choice_ == "rule":
            return 1.0 - top
        learned = predict_outcome_gain(features, self.n_classes, self.coef_)
        if self.choice_ == "learned":
            return learned
        return 0.5 * learned + 0.5 * (self.expert_accuracy_ - top)

    def _serve_rule(self, reason: str) -> Self:
        self.choice_, self.choice_reason_ = "rule", reason
        if hasattr(self, "coef_"):
            del self.coef_
        return self

    def _check_params(self) -> None:
        if self.choice not in ("auto", *CANDIDATES):
            raise ValueError(f"unknown choice '{self.choice}'; choose 'auto', 'rule', 'learned' or 'blend'")
        if not 0 < self.max_rate <= 1:
            raise ValueError(f"max_rate must be in (0, 1], got {self.max_rate}")
        if not all(0 < rate <= 1 for rate in self._guard_rates()):
            raise ValueError(f"guard_rates must lie in (0, 1], got {self.guard_rates}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")

    def _guard_rates(self) -> list[float]:
        return list(GUARD_RATES if self.guard_rates is None else self.guard_rates)

    def _cross_validate(self, design: np.ndarray, small: np.ndarray, expert: np.ndarray,
                        rows: np.ndarray) -> dict[str, Any]:
        """Per-fold area (and gain at each guard rate) of each candidate on out-of-fold scores of ``rows``;
        the other rows always stay on the fitting side."""
        gain = expert - small
        rates = [rate for rate in self._guard_rates() if rate <= self.max_rate]
        areas: dict[str, list[float]] = {name: [] for name in CANDIDATES}
        at_rates: dict[str, list[np.ndarray]] = {name: [] for name in CANDIDATES}
        always_fitted = np.setdiff1d(np.arange(len(design)), rows)
        splitter = KFold(n_splits=self.folds, shuffle=True, random_state=self.random_state)
        for fit_rows, held_rows in splitter.split(rows):
            fit_part, held_part = np.concatenate([rows[fit_rows], always_fitted]), rows[held_rows]
            held = design[held_part]
            coef = fit_outcome_models(design[fit_part], small[fit_part], expert[fit_part], self.regularization)
            learned = outcome_gain(held, coef)
            chow = held[:, 0]
            rule_gain = expert[fit_part].mean() - (1.0 - chow)
            scores = {"rule": chow, "learned": learned, "blend": 0.5 * learned + 0.5 * rule_gain}
            for name, values in scores.items():
                curve = expected_deferral_gain(values, gain[held_part])
                steps = len(curve) - 1
                areas[name].append(float(curve[: int(np.floor(self.max_rate * steps)) + 1].mean()))
                at_rates[name].append(curve[[int(round(rate * steps)) for rate in rates]])
        summary: dict[str, Any] = {"folds": self.folds, "max_rate": self.max_rate, "validated_on": len(rows),
                                   "area": {}, "advantage": {}, "advantage_at": {}}
        for name in CANDIDATES:
            summary["area"][name] = float(np.mean(areas[name]))
            if name != "rule":
                advantage = np.asarray(areas[name]) - np.asarray(areas["rule"])
                summary["advantage"][name] = {"mean": float(advantage.mean()),
                                              "standard_error": float(advantage.std(ddof=1) / np.sqrt(len(advantage)))}
                by_rate = (np.asarray(at_rates[name]) - np.asarray(at_rates["rule"])).mean(axis=0)
                summary["advantage_at"][name] = {f"{rate:g}": float(value) for rate, value in zip(rates, by_rate)}
        return summary

    def _choose(self, cv: dict[str, Any]) -> tuple[str, str]:
        def below_at(name: str) -> list[str]:
            return [rate for rate, value in cv["advantage_at"][name].items() if value < 0]

        def passes(name: str) -> bool:
            advantage = cv["advantage"][name]
            return advantage["mean"] > max(self.margin * advantage["standard_error"], 0.0) and not below_at(name)

        eligible = [name for name in ("learned", "blend") if passes(name)]
        best = max(eligible or ["learned", "blend"], key=lambda name: cv["advantage"][name]["mean"])
        advantage = cv["advantage"][best]
        detail = (f"{best}'s cross-validated area up to {self.max_rate:.0%} deferral is "
                  f"{advantage['mean']:+.4f} over the rule (s.e. {advantage['standard_error']:.4f}, "
                  f"{self.folds} folds over {cv['validated_on']} of {self.n_fit_} samples)")
        if eligible:
            return best, detail
        if below_at(best):
            rates = ", ".join(f"{float(rate):.0%}" for rate in below_at(best))
            return "rule", f"{detail}, but below the rule at {rates} deferral, so the rule is served"
        return "rule", f"{detail}: not more than {self.margin:g} s.e. better, so the rule is served"


def expected_deferral_gain(scores: ArrayLike, gain: ArrayLike) -> np.ndarray:
    """Accuracy gained by deferring the ``k`` highest scores, ``k = 0..n``, ties deferred in random order.

    Tied scores are counted at their expected value (the group's mean gain), so a rule with few
    distinct scores is neither helped nor hurt by the order of the samples.

    >>> expected_deferral_gain([0.5, 0.5, 0.1], [1, 0, -1]).round(3).tolist()
    [0.0, 0.167, 0.333, 0.0]
    """
    scores, gain = np.asarray(scores, dtype=float), np.asarray(gain, dtype=float)
    n = len(gain)
    if n == 0:
        return np.zeros(1)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_gain = scores[order], gain[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]]))
    sizes = np.diff(np.concatenate([starts, [n]]))
    expected = np.repeat(np.add.reduceat(sorted_gain, starts) / sizes, sizes)
    return np.concatenate([[0.0], np.cumsum(expected)]) / n


def deferral_area(scores: ArrayLike, gain: ArrayLike, max_rate: float = 1.0) -> float:
    """Mean accuracy gain over deferral rates ``0..max_rate`` when deferring highest scores first
    (ties at their expected value, see :func:`expected_deferral_gain`).

    >>> round(deferral_area([0.9, 0.5, 0.1], [1, 0, -1]), 4)
    0.1667
    """
    curve = expected_deferral_gain(scores, gain)
    return float(curve[: int(np.floor(max_rate * (len(curve) - 1))) + 1].mean())
