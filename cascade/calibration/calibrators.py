"""Post-hoc calibrators: fit on the calibration split's raw probabilities and labels, then transform.

Every calibrator takes and returns ``(n, k)`` class probabilities:

* :class:`TemperatureScaling` divides the log-probabilities by one fitted temperature (keeps the ranking);
* :class:`PlattScaling` fits ``sigmoid(a * logit(p) + b)`` per class with Platt's smoothed
  targets (scikit-learn's ``method="sigmoid"``; a test checks they agree);
* :class:`IsotonicCalibration` fits a monotone step function per class (scikit-learn's
  ``IsotonicRegression``), stored as its breakpoints so loading needs no pickle.

Multi-class Platt and isotonic work one-vs-rest and renormalise, as scikit-learn does.

>>> import numpy as np
>>> raw = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]] * 10)
>>> y = np.array([0, 1, 1, 0] * 10)
>>> PlattScaling().fit(raw, y).transform(raw).shape
(40, 2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, logit
from sklearn.isotonic import IsotonicRegression

from cascade.artifact import ArtifactError
from cascade.persistence import Persistent, SavedFormat

CALIBRATOR_FORMAT = SavedFormat("calibrator", "calibrator.json", "cascade.calibrator", "cascade.calibrator.manifest")
EPS = 1e-12


class CalibratorBase(Persistent):
    """sklearn-style: settings in ``__init__``, ``fit(probs, y)`` returns self, state in ``*_``.

    Saved through :class:`cascade.persistence.Persistent` (``calibrator.json`` + manifest);
    ``transform`` before ``fit`` raises :class:`~cascade.persistence.NotFittedError`.
    """

    _format = CALIBRATOR_FORMAT

    def fit(self, probs: np.ndarray, y: np.ndarray) -> Self:
        raise NotImplementedError

    def transform(self, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.fit(probs, y).transform(probs)


class IdentityCalibrator(CalibratorBase):
    """Leaves probabilities as they are (``calibrator.kind: none``)."""

    kind = "none"
    _json_state = ("n_classes_",)

    def fit(self, probs: np.ndarray, y: np.ndarray) -> Self:
        self.n_classes_ = check_probs(probs, y).shape[1]
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return check_probs(probs, n_classes=self.n_classes_)


class TemperatureScaling(CalibratorBase):
    """``softmax(log p / T)`` with ``T`` minimising the negative log-likelihood on the calibration split."""

    kind = "temperature"
    _json_state = ("temperature_", "n_classes_")

    def fit(self, probs: np.ndarray, y: np.ndarray) -> Self:
        probs = check_probs(probs, y)
        logits, labels = np.log(np.clip(probs, EPS, 1.0)), np.asarray(y, dtype=int)

        def nll(log_t: float) -> float:
            return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean())

        result = minimize_scalar(nll, bounds=(np.log(0.01), np.log(100.0)), method="bounded")
        self.temperature_ = float(np.exp(result.x))
        self.n_classes_ = probs.shape[1]
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        self._check_fitted()
        probs = check_probs(probs, n_classes=self.n_classes_)
        return np.exp(log_softmax(np.log(np.clip(probs, EPS, 1.0)) / self.temperature_, axis=1))


class PlattScaling(CalibratorBase):
    """Per class, ``sigmoid(a * logit(p) + b)`` fitted with Platt's smoothed targets (one-vs-rest)."""

    kind = "platt"
    _json_state = ("slopes_", "intercepts_", "n_classes_")

    def fit(self, probs: np.ndarray, y: np.ndarray) -> Self:
        probs = check_probs(probs, y)
        columns = [1] if probs.shape[1] == 2 else range(probs.shape[1])
        fitted = [_platt(_logit(probs[:, c]), np.asarray(y) == c) for c in columns]
        self.slopes_ = np.array([a for a, _ in fitted])
        self.intercepts_ = np.array([b for _, b in fitted])
        self.n_classes_ = probs.shape[1]
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        self._check_fitted()
        probs = check_probs(probs, n_classes=self.n_classes_)
        if self.n_classes_ == 2:
            positive = expit(self.slopes_[0] * _logit(probs[:, 1]) + self.intercepts_[0])
            return np.column_stack([1.0 - positive, positive])
        return _normalise(expit(self.slopes_ * _logit(probs) + self.intercepts_))


class IsotonicCalibration(CalibratorBase):
    """Per class, a monotone non-decreasing map fitted by isotonic regression (one-vs-rest)."""

    kind = "isotonic"
    _json_state = ("breakpoints_", "values_", "n_classes_")

    def fit(self, probs: np.ndarray, y: np.ndarray) -> Self:
        probs = check_probs(probs, y)
        columns = [1] if probs.shape[1] == 2 else range(probs.shape[1])
        breakpoints, values = [], []
        for c in columns:
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs[:, c], np.asarray(y) == c)
            breakpoints.append(iso.X_thresholds_.tolist())
            values.append(iso.y_thresholds_.tolist())
        self.breakpoints_, self.values_ = breakpoints, values
        self.n_classes_ = probs.shape[1]
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        self._check_fitted()
        probs = check_probs(probs, n_classes=self.n_classes_)
        if self.n_classes_ == 2:
            positive = np.interp(probs[:, 1], self.breakpoints_[0], self.values_[0])
            return np.column_stack([1.0 - positive, positive])
        mapped = np.column_stack([np.interp(probs[:, c], self.breakpoints_[c], self.values_[c])
                                  for c in range(self.n_classes_)])
        return _normalise(mapped)


CALIBRATORS: dict[str, type[CalibratorBase]] = {
    c.kind: c for c in (IdentityCalibrator, TemperatureScaling, PlattScaling, IsotonicCalibration)
}


def make_calibrator(kind: str) -> CalibratorBase:
    """A new calibrator of ``kind``: ``none``, ``temperature``, ``platt`` or ``isotonic``."""
    if kind not in CALIBRATORS:
        raise ValueError(f"unknown calibrator kind '{kind}'; choose one of {sorted(CALIBRATORS)}")
    return CALIBRATORS[kind]()


def load_calibrator(directory: str | Path) -> CalibratorBase:
    """Load a calibrator saved by ``save``; a bad file raises ``ArtifactError`` naming it."""
    kind = CalibratorBase.saved_kind(directory)
    if kind not in CALIBRATORS:
        raise ArtifactError(f"{Path(directory) / CALIBRATOR_FORMAT.file}: unknown calibrator kind '{kind}'")
    return CALIBRATORS[kind].load(directory)


def check_probs(probs: Any, y: Any = None, n_classes: int | None = None) -> np.ndarray:
    """A finite ``(n, k)`` probability array (k ≥ 2), matching ``y`` and ``n_classes`` when given."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (n, k >= 2), got {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities hold NaN or inf")
    if n_classes is not None and probs.shape[1] != n_classes:
        raise ValueError(f"calibrator was fitted on {n_classes} classes, got {probs.shape[1]}")
    if y is not None:
        labels = np.asarray(y)
        if labels.shape != (len(probs),):
            raise ValueError(f"{len(probs)} probability rows but labels of shape {labels.shape}")
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= probs.shape[1]:
            raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return probs


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, EPS, 1.0 - EPS))


def _normalise(scores: np.ndarray) -> np.ndarray:
    totals = scores.sum(axis=1, keepdims=True)
    uniform = np.full_like(scores, 1.0 / scores.shape[1])
    return np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), uniform)


def _platt(decision: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Platt (1999): fit ``sigmoid(a f + b)`` to targets smoothed towards the class priors."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    target = np.where(positive, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * decision + ab[1]
        # cross-entropy of sigmoid(z) against target, written stably: log(1 + e^z) - t z
        value = np.logaddexp(0.0, z) - target * z
        grad_z = expit(z) - target
        return float(value.sum()), np.array([float(grad_z @ decision), float(grad_z.sum())])

    prior = np.log((n_neg + 1.0) / (n_pos + 1.0))
    result = minimize(loss, x0=np.array([1.0, -prior]), jac=True, method="L-BFGS-B")
    return float(result.x[0]), float(result.x[1])

