"""A low-dimensional view of the input itself, so a learned deferral policy can see *where* a sample lies.

Confidence rules only see the small tier's probabilities; an expert that is a specialist (strong
on some kinds of input, weak on others) can only be exploited by a policy that sees the input.
:class:`InputView` gives it ``components`` principal components of a fixed representation,
fitted on the detector's training samples:

* texts: MiniLM sentence embeddings (cached on disk), plus ``log(1 + characters)`` and whether the
  text is longer than ``truncate_chars`` (what the expert will cut);
* feature rows: the columns standardised with the training mean and spread (a missing value sits
  at the mean, :mod:`cascade.standardise`);
* images: pixels / 255.

Everything after the representation is one centred matrix product, so the view costs
microseconds per sample on top of the representation.

>>> import numpy as np
>>> rows = np.random.default_rng(0).normal(size=(200, 5))
>>> InputView("features", components=3).fit(rows).transform(rows[:4]).shape
(4, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from cascade.persistence import NotFittedError, Persistent, SavedFormat
from cascade.standardise import column_moments, standardised

FIT_SAMPLES = 5000


class InputView(Persistent):
    """Principal components of the input's representation (+ length and truncation for texts)."""

    kind = "input-view"
    _format = SavedFormat("feature", "feature.json", "cascade.feature", "cascade.feature.manifest")
    _array_state = ("center_", "axes_", "column_mean_", "column_scale_")
    _optional_state = ("column_mean_", "column_scale_")  # standardisation of feature rows only

    def __init__(self, modality: str, components: int = 8, truncate_chars: int | None = None, seed: int = 0,
                 model: str = "minilm") -> None:
        if modality not in ("text", "features", "image"):
            raise ValueError(f"unknown modality '{modality}'")
        if components < 1:
            raise ValueError(f"components must be at least 1, got {components}")
        self.modality = modality
        self.components = components
        self.truncate_chars = truncate_chars
        self.seed = seed
        self.model = model

    @property
    def n_columns(self) -> int:
        """How many columns :meth:`transform` returns."""
        return self.axes_.shape[0] + (2 if self.modality == "text" else 0)

    def fit(self, X: Sequence[str] | np.ndarray) -> Self:
        """Fit the standardisation (feature rows) and the principal axes on at most 5,000 samples."""
        n = len(X)
        if n < 2:
            raise ValueError(f"an input view needs at least 2 training samples, got {n}")
        keep = np.sort(np.random.default_rng(self.seed).permutation(n)[:FIT_SAMPLES])
        subset: Any = [X[i] for i in keep] if self.modality == "text" else np.asarray(X)[keep]
        if self.modality == "features":
            rows = np.asarray(subset, dtype=np.float64)
            self.column_mean_, spread = column_moments(rows)
            self.column_scale_ = np.where(spread > 0, spread, 1.0)
        points = self._represent(subset)
        self.center_ = points.mean(axis=0)
        _, _, axes = np.linalg.svd(points - self.center_, full_matrices=False)
        self.axes_ = axes[: min(self.components, axes.shape[0])]
        return self

    def transform(self, X: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(n, n_columns)``: the components, then (texts) log length and the truncation flag."""
        if not hasattr(self, "axes_"):
            raise NotFittedError("InputView is not fitted; call fit(training inputs) first")
        view = (self._represent(X) - self.center_) @ self.axes_.T
        if self.modality != "text":
            return view
        chars = np.fromiter((len(text) for text in X), dtype=np.float64, count=len(X))
        limit = np.inf if self.truncate_chars is None else self.truncate_chars
        return np.column_stack([view, np.log1p(chars), (chars > limit).astype(np.float64)])

    def _represent(self, X: Sequence[str] | np.ndarray) -> np.ndarray:
        if self.modality == "text":
            from cascade.embeddings import shared_embedder

            return shared_embedder(self.model).encode(list(X)).astype(np.float64)
        rows = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        if self.modality == "features":
            return standardised(rows, self.column_mean_, self.column_scale_)
        return rows / 255.0
