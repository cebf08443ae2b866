"""The learned post-hoc deferral policy: predict the accuracy gained by deferring each sample.

Trained on a held-out split (not the detector's training data, not the calibration split), a gain
model sees the class probabilities, their max-prob / margin / entropy uncertainties and any extra
feature columns (e.g. an embedding), and predicts the expected gain of deferring,
``E[expert_correct - small_correct | x]``: unlike a confidence rule it also learns *where the
expert is wrong*. ``model`` picks the gain model:

* ``"logistic"`` or ``"gradient-boosting"``: a classifier of the gain class in {-1, 0, +1}; the
  score is ``P(+1) - P(-1)``;
* ``"outcomes"``: two logistic models, ``P(expert right | x)`` and ``P(small right | x)``, over
  :func:`outcome_design`; the score is their difference. Every sample informs both models, so far
  more data carries signal than in a classifier of the rare "expert fixes it" event. This is the
  gain model of :class:`~policies.LearnedPolicy`, which serves it only where it beats Chow's rule.

Given per-sample expert ``cost`` at fit time, it also fits a cost model (ridge regression on
log-cost) and scores the expected gain per unit of predicted cost, the greedy order for a cost
budget.

>>> import numpy as np
>>> from policies.simulate import simulate
>>> data = simulate(2000, seed=0)
>>> policy = PosthocPolicy(n_classes=2).fit(data.features, data.small_correct, data.expert_correct)
>>> policy.score(data.features[:3]).shape
(3,)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, xlogy
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cascade.artifact import ArtifactError
from cascade.persistence import check_fitted
from policies.base import PolicyBase, as_features, check_outcomes, class_probabilities
from policies.baselines import deferral_gain
from policies.rules import uncertainty_features

CHUNK = 4096
"""rows the outcome models score at a time: the design matrix of a chunk stays in cache"""


class PosthocPolicy(PolicyBase):
    """Expected gain of deferring, from a gain classifier (logistic or gradient boosting) or two outcome models.

    ``n_classes`` says how many leading feature columns are class probabilities; the columns after
    them are extra features. ``model`` is ``"logistic"``, ``"gradient-boosting"`` or ``"outcomes"``.
    """

    kind = "posthoc"
    _estimator_state = ("estimator_", "cost_model_")
    _array_state = ("coef_",)
    _optional_state = ("estimator_", "coef_", "cost_model_")  # the model says which of the first two it needs

    def __init__(
        self,
        model: Literal["logistic", "gradient-boosting", "outcomes"] = "logistic",
        n_classes: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.model = model
        self.n_classes = n_classes
        self.random_state = random_state

    def fit(
        self,
        features: ArrayLike,
        small_correct: ArrayLike,
        expert_correct: ArrayLike,
        cost: ArrayLike | None = None,
    ) -> PosthocPolicy:
        """Fit the gain model (and the cost model when ``cost`` is given) on a held-out split."""
        features = as_features(features)
        check_outcomes(len(features), small_correct, expert_correct, cost)
        if len(features) == 0:
            raise ValueError("no samples to fit on: the features have 0 rows")
        for name in ("estimator_", "coef_", "cost_model_"):
            if hasattr(self, name):
                delattr(self, name)
        design = self._design(features)
        if self.model == "outcomes":
            self.coef_ = fit_outcome_models(outcome_design(features, self.n_classes), small_correct, expert_correct)
        else:
            gain = deferral_gain(small_correct, expert_correct).astype(int)
            if len(np.unique(gain)) < 2:
                raise ValueError(f"the deferral gain takes a single value ({gain[0]}) on this split: nothing to learn")
            self.estimator_ = self._make_estimator().fit(design, gain)
        if cost is not None:
            cost = np.asarray(cost, dtype=float).reshape(-1)
            if np.any(cost <= 0):
                raise ValueError("cost must be positive to score gain per unit of cost")
            self.cost_model_ = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(design, np.log(cost))
        self.n_features_in_ = features.shape[1]
        return self

    def score(self, features: ArrayLike) -> np.ndarray:
        """Expected gain of deferring (per unit of predicted cost if fitted with cost)."""
        self._check_fitted()
        features = self._features(features)
        if self.model == "outcomes":
            expected_gain = predict_outcome_gain(features, self.n_classes, self.coef_)
        else:
            expected_gain = self.estimator_.predict_proba(self._design(features)) @ self.estimator_.classes_.astype(float)
        if hasattr(self, "cost_model_"):
            return expected_gain / np.exp(self.cost_model_.predict(self._design(features)))
        return expected_gain

    def _design(self, features: np.ndarray) -> np.ndarray:
        """The gain classifier's and the cost model's design ``[p_1..p_k, uncertainties, extras]``."""
        probabilities = class_probabilities(features, self.n_classes)
        extra = features[:, probabilities.shape[1]:]
        return np.column_stack([probabilities, uncertainty_features(probabilities), extra])

    def _make_estimator(self) -> Pipeline | HistGradientBoostingClassifier:
        if self.model == "logistic":
            return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        if self.model == "gradient-boosting":
            return HistGradientBoostingClassifier(
                max_iter=100, max_leaf_nodes=15, early_stopping=True, random_state=self.random_state
            )
        raise ValueError(f"unknown model '{self.model}'; choose 'logistic', 'gradient-boosting' or 'outcomes'")

    def _gain_state(self) -> str:
        """The attribute holding the fitted gain model."""
        return "coef_" if self.model == "outcomes" else "estimator_"

    def _check_fitted(self) -> None:
        check_fitted(self, ["n_features_in_", self._gain_state()])

    def _load_extra(self, directory: Path) -> None:
        if not hasattr(self, self._gain_state()):
            raise ArtifactError(f"{directory / self._format.file}: missing policy state ['{self._gain_state()}']")


def outcome_design(features: np.ndarray, n_classes: int | None) -> np.ndarray:
    """The outcome models' design ``[chow, margin, entropy, logit(max p), p_1..p_k, extras, chow * extras]``.

    >>> outcome_design(np.array([[0.8, 0.2, 3.0]]), n_classes=2).round(2).tolist()
    [[0.2, 0.4, 0.72, 1.39, 0.8, 0.2, 3.0, 0.6]]
    """
    probabilities = class_probabilities(features, n_classes)
    k = probabilities.shape[1]
    extras = features[:, k:]
    n, extra = len(features), extras.shape[1]
    top_two = np.partition(probabilities, k - 2, axis=1)[:, -2:] if k > 2 else np.sort(probabilities, axis=1)
    design = np.empty((n, 4 + k + 2 * extra), order="F")  # column by column
    design[:, 0] = chow = 1.0 - top_two[:, 1]
    design[:, 1] = 1.0 - (top_two[:, 1] - top_two[:, 0])
    design[:, 2] = -xlogy(probabilities, probabilities).sum(axis=1) / np.log(k)
    top = np.minimum(np.maximum(top_two[:, 1], 1e-6), 1 - 1e-6)
    design[:, 3] = np.log(top / (1 - top))
    design[:, 4:4 + k] = probabilities
    design[:, 4 + k:4 + k + extra] = extras
    design[:, 4 + k + extra:] = chow[:, None] * extras
    return design


def fit_outcome_models(
    design: np.ndarray, small_correct: ArrayLike, expert_correct: ArrayLike, regularization: float = 1.0
) -> np.ndarray:
    """Coefficients ``(2, 1 + d)`` (intercept first; expert row, then small-tier row) on the raw design.

    Two logistic models with inverse L2 strength ``regularization``, fitted on standardised columns;
    the standardisation is folded into the coefficients so that scoring is one matrix product.
    """
    mean, scale = design.mean(axis=0), design.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    standard = (design - mean) / scale
    rows = []
    for outcome in (expert_correct, small_correct):
        coef = _fit_outcome(standard, np.asarray(outcome, dtype=float).reshape(-1), regularization)
        weights = coef[1:] / scale
        rows.append(np.concatenate([[coef[0] - mean @ weights], weights]))
    return np.array(rows)


def _fit_outcome(design: np.ndarray, outcome: np.ndarray, regularization: float) -> np.ndarray:
    """``[intercept, weights...]`` of a logistic model; a constant outcome gives a constant model."""
    if np.all(outcome == outcome[0]):
        return np.concatenate([[40.0 if outcome[0] else -40.0], np.zeros(design.shape[1])])
    model = LogisticRegression(C=regularization, max_iter=2000).fit(design, outcome.astype(int))
    return np.concatenate([model.intercept_, model.coef_[0]])


def outcome_gain(design: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``P(expert right) - P(small right)`` under the two logistic models in ``coef``."""
    probabilities = expit(design @ coef[:, 1:].T + coef[:, 0])
    return probabilities[:, 0] - probabilities[:, 1]


def predict_outcome_gain(features: np.ndarray, n_classes: int | None, coef: np.ndarray) -> np.ndarray:
    """:func:`outcome_gain` of ``features``, :data:`CHUNK` rows at a time."""
    if not len(features):
        return np.zeros(0)
    return np.concatenate([outcome_gain(outcome_design(features[start:start + CHUNK], n_classes), coef)
                           for start in range(0, len(features), CHUNK)])
