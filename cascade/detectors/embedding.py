"""Text detectors on MiniLM sentence embeddings (cached per text hash by :class:`~cascade.embeddings.Embedder`).

>>> det = EmbeddingLogistic().fit(train_texts, train_labels)   # doctest: +SKIP
>>> det.predict_proba(["cheap meds"]).shape                     # doctest: +SKIP
(1, 2)
"""

from __future__ import annotations

from typing import Self, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from cascade.detectors.base import DetectorBase, anomaly_probability, check_labels, check_texts, score_reference
from cascade.embeddings import shared_embedder
from cascade.linalg import cross


class EmbeddingLogistic(DetectorBase):
    """Logistic regression on unit-length MiniLM embeddings."""

    kind = "embedding-lr"
    modality = "text"
    _json_state = ("classes_",)
    _estimator_state = ("classifier_",)

    def __init__(self, model: str = "minilm", C: float = 10.0) -> None:
        self.model = model
        self.C = C

    def fit(self, X: Sequence[str], y: np.ndarray | None = None) -> Self:
        texts = check_texts(X, self.kind)
        labels = check_labels(y, len(texts), self.kind)
        embeddings = shared_embedder(self.model).encode(texts)
        self.classifier_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000).fit(embeddings, labels)
        self.classes_ = self.classifier_.classes_
        return self

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        embeddings = shared_embedder(self.model).encode(check_texts(X, self.kind))
        return np.asarray(self.classifier_.predict_proba(embeddings), dtype=np.float64)


class EmbeddingKnn(DetectorBase):
    """One-class: mean cosine distance to the ``k`` nearest normal training texts in MiniLM space.

    Keeps the normal training embeddings (float32, safetensors) and scores by one matrix product.
    """

    kind = "embedding-knn"
    modality = "text"
    one_class = True
    _json_state = ("classes_",)
    _array_state = ("normal_embeddings_", "reference_")

    def __init__(self, model: str = "minilm", k: int = 5) -> None:
        self.model = model
        self.k = k

    def fit(self, X: Sequence[str], y: np.ndarray | None = None) -> Self:
        texts = check_texts(X, self.kind)
        if len(texts) <= self.k:
            raise ValueError(f"detector '{self.kind}' needs more than k={self.k} normal texts, got {len(texts)}")
        self.normal_embeddings_ = shared_embedder(self.model).encode(texts).astype(np.float32)
        similarity = self.normal_embeddings_ @ self.normal_embeddings_.T
        np.fill_diagonal(similarity, -np.inf)  # leave-one-out: a training text is not its own neighbour
        self.reference_ = score_reference(self._mean_distance(similarity))
        self.classes_ = np.array([0, 1])
        return self

    def anomaly_score(self, X: Sequence[str]) -> np.ndarray:
        """Mean cosine distance to the ``k`` nearest normal training texts (higher = more anomalous)."""
        self._check_fitted()
        embeddings = shared_embedder(self.model).encode(check_texts(X, self.kind))
        return self._mean_distance(cross(embeddings, self.normal_embeddings_))

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        return anomaly_probability(self.anomaly_score(X), self.reference_)

    def _mean_distance(self, similarity: np.ndarray) -> np.ndarray:
        nearest = -np.partition(-similarity, self.k - 1, axis=1)[:, : self.k]
        return np.asarray(1.0 - nearest.mean(axis=1), dtype=np.float64)
