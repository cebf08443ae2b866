"""Any PyOD one-class detector by name, fitted on normal rows only.

``kind: pyod, params: {model: ECOD}`` takes the class ``ECOD`` from ``pyod.models.ecod`` (the
rule for every PyOD model: the class named ``model`` in ``pyod.models.<model lowercased>``);
``model_params`` go to its constructor. Rows are imputed (missing values, see
:func:`cascade.detectors.tabular.imputer`) and standardised first (distance-based models such as
LOF and KNN need it; rank-based ECOD / COPOD and IForest do not mind). The PyOD anomaly score
(``decision_function``, higher = stranger) becomes a raw probability the calibrator then fixes.

Persistence: skops, trusting scikit-learn / numpy / scipy types plus exactly the configured
PyOD class, so no pickle is loaded. Models skops cannot serialise (PyOD's torch models, e.g.
``AutoEncoder``, ``DIF``) are refused when saved, with that reason.

>>> import numpy as np
>>> rows = np.random.default_rng(0).normal(size=(300, 3))
>>> PyODDetector(model="ECOD").fit(rows).predict_proba(rows[:2]).shape   # doctest: +SKIP
(2, 2)
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Self

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cascade.artifact import ArtifactError, load_sklearn, save_sklearn
from cascade.detectors.base import DetectorBase, anomaly_probability, check_rows, score_reference
from cascade.detectors.tabular import IMPUTED, imputer

MODEL_FILE = "model_.skops"


def pyod_module(model: str) -> str:
    """The module that holds PyOD's ``model`` class, e.g. ``pyod.models.iforest`` for ``IForest``."""
    return f"pyod.models.{model.lower()}"


def check_model_name(model: Any) -> None:
    """Raise naming the fix when PyOD has no module for ``model`` (without importing PyOD)."""
    spec = importlib.util.find_spec("pyod")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("detector kind 'pyod' needs the PyOD package: pip install pyod==3.6.7")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    if not isinstance(model, str) or not (models / f"{model.lower()}.py").is_file():
        raise ValueError(f"detector.params.model: PyOD has no model {model!r}; use a class name such as "
                         "ECOD, COPOD, IForest, LOF, KNN, HBOS, OCSVM, PCA, LODA, INNE")


def pyod_class(model: str) -> type:
    """PyOD's detector class called ``model``."""
    check_model_name(model)
    from pyod.models.base import BaseDetector

    cls = getattr(importlib.import_module(pyod_module(model)), model, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseDetector)):
        raise ValueError(f"detector.params.model: {pyod_module(model)} has no detector class '{model}' "
                         "(class names are case-sensitive, e.g. IForest)")
    return cls


class PyODDetector(DetectorBase):
    """A PyOD one-class detector on imputed, standardised rows (``scaler_``); labels, if given, are ignored."""

    kind = "pyod"
    modality = "features"
    one_class = True
    missing_values = IMPUTED
    _json_state = ("classes_", "n_features_in_", "model_type_")
    _estimator_state = ("scaler_",)
    _array_state = ("reference_",)

    def __init__(self, model: str = "ECOD", model_params: dict[str, Any] | None = None, scale: bool = True) -> None:
        self.model = model
        self.model_params = model_params
        self.scale = scale

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> Self:
        rows = check_rows(X, self.kind, missing=True)
        cls = pyod_class(self.model)
        self.scaler_ = Pipeline([("impute", imputer()),
                                 ("scale", StandardScaler(with_mean=self.scale, with_std=self.scale))]).fit(rows)
        try:
            self.model_ = cls(**(self.model_params or {}))
        except TypeError as exc:
            raise ValueError(f"detector.params.model_params: bad parameters for PyOD {self.model} ({exc})") from exc
        self.model_.fit(self.scaler_.transform(rows))
        self.model_type_ = f"{cls.__module__}.{cls.__name__}"
        self.reference_ = score_reference(self.model_.decision_scores_)
        self.n_features_in_ = rows.shape[1]
        self.classes_ = np.array([0, 1])
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """PyOD's ``decision_function``: higher means more anomalous."""
        self._check_fitted()
        rows = self.scaler_.transform(check_rows(X, self.kind, self.n_features_in_, missing=True))
        return np.asarray(self.model_.decision_function(rows), dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return anomaly_probability(self.anomaly_score(X), self.reference_)

    def _save_extra(self, directory: Path) -> None:
        try:
            save_sklearn(self.model_, directory / MODEL_FILE)
        except Exception as exc:  # skops raises several types for objects it cannot serialise
            raise ArtifactError(f"PyOD model {self.model} cannot be saved without pickle ({exc}); "
                                "use a scikit-learn based PyOD model such as ECOD, IForest, LOF or COPOD") from exc

    def _load_extra(self, directory: Path) -> None:
        expected = f"{pyod_module(self.model)}.{self.model}"
        if self.model_type_ != expected:
            raise ArtifactError(f"{directory}: detector.json names PyOD model {self.model} but holds {self.model_type_}")
        self.model_ = load_sklearn(directory / MODEL_FILE, trusted=(expected,))

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if not hasattr(self, "model_"):
            raise RuntimeError("PyODDetector is not fitted (missing model_); call fit first")
