"""Tabular one-class detector: IsolationForest fitted on normal rows only.

>>> import numpy as np
>>> rows = np.random.default_rng(0).normal(size=(500, 4))
>>> IsolationForestDetector(n_estimators=50).fit(rows).predict_proba(rows[:2]).shape
(2, 2)
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cascade.detectors.base import DetectorBase, anomaly_probability, check_rows, score_reference


class IsolationForestDetector(DetectorBase):
    """IsolationForest on standardised rows; the anomaly score is ``-score_samples`` (higher = stranger).

    No labelled anomalies are needed to fit; labels, if given, are ignored.
    """

    kind = "isolation-forest"
    modality = "features"
    one_class = True
    _json_state = ("classes_", "n_features_in_")
    _estimator_state = ("forest_",)
    _array_state = ("reference_",)

    def __init__(self, n_estimators: int = 200, max_samples: int | str = "auto", random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> Self:
        rows = check_rows(X, self.kind)
        self.forest_ = Pipeline([
            ("scale", StandardScaler()),
            ("forest", IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       random_state=self.random_state)),
        ]).fit(rows)
        self.n_features_in_ = rows.shape[1]
        self.reference_ = score_reference(-self.forest_.score_samples(rows))
        self.classes_ = np.array([0, 1])
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """``-score_samples``: higher means more anomalous."""
        self._check_fitted()
        return np.asarray(-self.forest_.score_samples(check_rows(X, self.kind, self.n_features_in_)), dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return anomaly_probability(self.anomaly_score(X), self.reference_)
