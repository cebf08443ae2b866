"""A learned post-hoc deferral policy: predict the accuracy gained by deferring each sample.

Trained on a held-out split (not the detector's training data, not the calibration split), the
model sees the class probabilities, their max-prob / margin / entropy uncertainties and any extra
feature columns (e.g. an embedding), and predicts the gain class
``expert_correct - small_correct`` in {-1, 0, +1}. The score is the expected gain
``P(+1) - P(-1)``: unlike a confidence rule it also learns *where the expert is wrong*.

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

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from policies.base import PolicyBase, as_features, check_outcomes, class_probabilities
from policies.baselines import deferral_gain
from policies.rules import uncertainty_features


class PosthocPolicy(PolicyBase):
    """Expected gain of deferring, from logistic regression or gradient boosting.

    ``n_classes`` says how many leading feature columns are class probabilities; the columns after
    them are extra features. ``model`` is ``"logistic"`` or ``"gradient-boosting"``.
    """

    kind = "posthoc"
    _estimator_state = ("estimator_", "cost_model_")
    _optional_state = ("cost_model_",)

    def __init__(
        self,
        model: Literal["logistic", "gradient-boosting"] = "logistic",
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
        gain = deferral_gain(small_correct, expert_correct).astype(int)
        if len(gain) == 0:
            raise ValueError("no samples to fit on: the features have 0 rows")
        if len(np.unique(gain)) < 2:
            raise ValueError(f"the deferral gain takes a single value ({gain[0]}) on this split: nothing to learn")
        design = self._design(features)
        self.estimator_ = self._make_estimator().fit(design, gain)
        if cost is not None:
            cost = np.asarray(cost, dtype=float).reshape(-1)
            if np.any(cost <= 0):
                raise ValueError("cost must be positive to score gain per unit of cost")
            self.cost_model_ = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(design, np.log(cost))
        elif hasattr(self, "cost_model_"):
            del self.cost_model_
        self.n_features_in_ = features.shape[1]
        return self

    def score(self, features: ArrayLike) -> np.ndarray:
        """Expected gain of deferring (per unit of predicted cost if fitted with cost)."""
        self._check_fitted()
        design = self._design(self._features(features))
        expected_gain = self.estimator_.predict_proba(design) @ self.estimator_.classes_.astype(float)
        if hasattr(self, "cost_model_"):
            return expected_gain / np.exp(self.cost_model_.predict(design))
        return expected_gain

    def _design(self, features: np.ndarray) -> np.ndarray:
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
        raise ValueError(f"unknown model '{self.model}'; choose 'logistic' or 'gradient-boosting'")
