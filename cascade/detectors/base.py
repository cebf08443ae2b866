"""The small-tier contract: a detector fits on training data and returns class probabilities.

Detectors follow scikit-learn's conventions: hyper-parameters in ``__init__``, learning in
``fit`` (which returns ``self``), learned state in attributes ending in ``_``. Probabilities are
*raw*: a :mod:`cascade.calibration` calibrator fitted on the calibration split makes them mean
what they say. One-class detectors (``one_class = True``) learn from normal samples only and turn
their anomaly score into a raw probability that the calibrator then fixes.

Each detector saves into one directory through :class:`cascade.persistence.Persistent`:
``detector.json`` (kind, hyper-parameters, JSON state, format version), scikit-learn estimators
as skops files, arrays and torch weights as safetensors, and a ``manifest.json`` of checksums
checked at load.

>>> from cascade.detectors import make_detector
>>> make_detector("tfidf-lr", C=1.0)
TfidfLogistic(C=1.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, Sequence, runtime_checkable

import numpy as np

from cascade.persistence import Persistent, SavedFormat

DETECTOR_FORMAT = SavedFormat("detector", "detector.json", "cascade.detector", "cascade.detector.manifest")
Inputs = Sequence[str] | np.ndarray  # texts, feature rows (n, d) or images (n, h, w)


@runtime_checkable
class Detector(Protocol):
    """Anything that fits on training data and returns ``(n, k)`` class probabilities."""

    def fit(self, X: Inputs, y: np.ndarray | None = None) -> Any: ...

    def predict_proba(self, X: Inputs) -> np.ndarray: ...

    def save(self, directory: str | Path) -> None: ...


class DetectorBase(Persistent):
    """Shared persistence (:class:`cascade.persistence.Persistent`); subclasses set ``kind`` and list what to save.

    ``_json_state`` names learned attributes saved as JSON, ``_estimator_state`` scikit-learn
    estimators saved with skops, ``_array_state`` numpy arrays saved as safetensors. A subclass
    with other state (torch weights, an HF folder) overrides :meth:`_save_extra` /
    :meth:`_load_extra`. ``predict_proba`` before ``fit`` raises
    :class:`~cascade.persistence.NotFittedError`.
    """

    _format = DETECTOR_FORMAT
    modality: ClassVar[str]  # "text", "features" or "image"
    one_class: ClassVar[bool] = False
    missing_values: ClassVar[str | None] = None
    """what the detector does with a missing feature value (NaN); ``None``: it refuses NaN"""

    def fit(self, X: Inputs, y: np.ndarray | None = None) -> Self:
        raise NotImplementedError

    def predict_proba(self, X: Inputs) -> np.ndarray:
        raise NotImplementedError

    @property
    def n_classes(self) -> int:
        return len(getattr(self, "classes_", (0, 1)))


def check_labels(y: np.ndarray | None, n: int, kind: str) -> np.ndarray:
    """Integer labels of length ``n`` with at least two classes (for supervised detectors)."""
    if y is None:
        raise ValueError(f"detector '{kind}' is supervised: fit(X, y) needs labels")
    y = np.asarray(y)
    if len(y) != n:
        raise ValueError(f"detector '{kind}': {n} samples but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError(f"detector '{kind}' needs at least two classes in y, got {np.unique(y).tolist()}")
    return y.astype(np.int64)


def check_texts(X: Inputs, kind: str) -> list[str]:
    if isinstance(X, np.ndarray) and X.dtype.kind not in "UO":
        raise TypeError(f"detector '{kind}' takes texts, got a numeric array of shape {X.shape}")
    texts = list(X)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"detector '{kind}' takes a sequence of str")
    return texts


def check_rows(X: Inputs, kind: str, n_features: int | None = None, missing: bool = False) -> np.ndarray:
    """A finite 2-D float array (images are flattened), with the fitted width when known; with
    ``missing`` NaN is allowed too (a missing value), infinity never."""
    try:
        rows = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"detector '{kind}' takes numeric arrays ({exc})") from exc
    if rows.ndim == 3:
        rows = rows.reshape(len(rows), -1)
    if rows.ndim != 2:
        raise ValueError(f"detector '{kind}' takes a 2-D array of rows, got shape {rows.shape}")
    if missing and np.isinf(rows).any():
        raise ValueError(f"detector '{kind}': input holds inf (a missing value is NaN)")
    if not missing and not np.isfinite(rows).all():
        raise ValueError(f"detector '{kind}': input holds NaN or inf")
    if n_features is not None and rows.shape[1] != n_features:
        raise ValueError(f"detector '{kind}' was fitted on {n_features} features, got {rows.shape[1]}")
    return rows


def anomaly_probability(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Raw ``(n, 2)`` probabilities from anomaly scores (higher = more anomalous).

    ``reference`` holds the median and the 95th percentile of the scores of normal training
    samples: the 95th percentile maps to 0.5 and the median to ~0.05, so the raw probability is
    monotone in the score and roughly sized; calibration on labelled data does the rest.
    """
    median, upper = float(reference[0]), float(reference[1])
    scale = max(upper - median, 1e-12) / np.log(19.0)
    positive = 1.0 / (1.0 + np.exp(-np.clip((scores - upper) / scale, -50, 50)))
    return np.column_stack([1.0 - positive, positive])


def score_reference(normal_scores: np.ndarray) -> np.ndarray:
    """Median and 95th percentile of the normal training samples' anomaly scores."""
    return np.quantile(np.asarray(normal_scores, dtype=float), [0.5, 0.95])
