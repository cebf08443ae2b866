"""Uncertainty features of calibrated probabilities, and distance to the training data.

Deferral policies rank samples by these. :func:`uncertainty_features` gives ``1 - max-prob``
(Chow's rule), the margin uncertainty and the normalised entropy side by side;
:class:`NeighbourDistance` adds how far a sample lies from the detector's training samples
(MiniLM embeddings for texts, standardised rows for features, pixels for images).

>>> import numpy as np
>>> uncertainty_features(np.array([[0.9, 0.1], [0.5, 0.5]])).round(2)
array([[0.1 , 0.2 , 0.47],
       [0.5 , 1.  , 1.  ]])
"""

from __future__ import annotations

from typing import Any, Self, Sequence

import numpy as np
from scipy.special import xlogy

from cascade.linalg import cross
from cascade.persistence import Persistent, SavedFormat
from cascade.standardise import column_moments, standardised


def max_prob_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - max_k p_k``: Chow's rule on calibrated probabilities."""
    return 1.0 - probabilities.max(axis=1)


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: high when the two leading classes are close."""
    top_two = np.partition(probabilities, -2, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by ``log k``, so 1 means uniform."""
    return -xlogy(probabilities, probabilities).sum(axis=1) / np.log(probabilities.shape[1])


def uncertainty_features(probabilities: np.ndarray) -> np.ndarray:
    """The three uncertainties side by side, shape ``(n, 3)``."""
    return np.column_stack(
        [max_prob_uncertainty(probabilities), margin_uncertainty(probabilities), entropy_uncertainty(probabilities)]
    )


class NeighbourDistance(Persistent):
    """Distance of each sample to its nearest training sample, in a fixed representation.

    Texts: cosine distance of MiniLM embeddings; feature rows: Euclidean distance after
    standardising with the training mean and scale (:mod:`cascade.standardise`: a missing value sits
    at the mean); images: Euclidean distance of pixels / 255
    divided by sqrt(pixels). At most ``max_reference`` training samples are kept (seeded choice).
    """

    kind = "neighbour-distance"
    _format = SavedFormat("feature", "feature.json", "cascade.feature", "cascade.feature.manifest")
    _array_state = ("reference_", "mean_", "scale_")
    _optional_state = ("mean_", "scale_")  # standardisation of feature rows only

    def __init__(self, modality: str, max_reference: int = 5000, seed: int = 0, model: str = "minilm") -> None:
        if modality not in ("text", "features", "image"):
            raise ValueError(f"unknown modality '{modality}'")
        self.modality = modality
        self.max_reference = max_reference
        self.seed = seed
        self.model = model

    def fit(self, X: Sequence[str] | np.ndarray) -> Self:
        n = len(X)
        keep = np.sort(np.random.default_rng(self.seed).permutation(n)[: self.max_reference])
        subset: Any = [X[i] for i in keep] if self.modality == "text" else np.asarray(X)[keep]
        if self.modality == "features":
            rows = np.asarray(subset, dtype=np.float64)
            self.mean_, spread = column_moments(rows)
            self.scale_ = spread + 1e-12
        self.reference_ = self._represent(subset)
        return self

    def transform(self, X: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(n,)`` distances to the nearest kept training sample."""
        self._check_fitted()
        points = self._represent(X)
        if self.modality == "text":
            return np.asarray(1.0 - cross(points, self.reference_).max(axis=1), dtype=np.float64)
        squared = ((points**2).sum(axis=1)[:, None] - 2.0 * cross(points, self.reference_)
                   + (self.reference_**2).sum(axis=1)[None, :])
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0)).astype(np.float64)

    def _represent(self, X: Sequence[str] | np.ndarray) -> np.ndarray:
        if self.modality == "text":
            from cascade.embeddings import shared_embedder

            return shared_embedder(self.model).encode(list(X)).astype(np.float32)
        rows = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        if self.modality == "features":
            return standardised(rows, self.mean_, self.scale_).astype(np.float32)
        return (rows / 255.0 / np.sqrt(rows.shape[1])).astype(np.float32)
