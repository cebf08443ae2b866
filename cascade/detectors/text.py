"""Text detectors on TF-IDF: supervised logistic regression, and one-class kNN distance.

>>> texts = ["cheap meds now", "meeting at 3", "win money now", "lunch tomorrow?"] * 4
>>> TfidfLogistic().fit(texts, [1, 0, 1, 0] * 4).predict_proba(["cheap money"]).shape
(1, 2)
"""

from __future__ import annotations

from typing import Self, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline

from cascade.detectors.base import (
    DetectorBase,
    anomaly_probability,
    check_labels,
    check_texts,
    score_reference,
)


def _vectorizer(max_features: int, ngram_max: int) -> TfidfVectorizer:
    return TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=max_features, ngram_range=(1, ngram_max),
                           strip_accents="unicode", dtype=np.float32)


class TfidfLogistic(DetectorBase):
    """TF-IDF word n-grams + logistic regression; works from a few dozen labels up.

    ``min_df`` is 2, so with very few labels (16) the vocabulary is small but never empty in
    practice; ``class_weight="balanced"`` keeps a rare positive class from being ignored.
    """

    kind = "tfidf-lr"
    modality = "text"
    _json_state = ("classes_",)
    _estimator_state = ("pipeline_",)

    def __init__(self, C: float = 4.0, max_features: int = 50_000, ngram_max: int = 2) -> None:
        self.C = C
        self.max_features = max_features
        self.ngram_max = ngram_max

    def fit(self, X: Sequence[str], y: np.ndarray | None = None) -> Self:
        texts = check_texts(X, self.kind)
        labels = check_labels(y, len(texts), self.kind)
        vectorizer = _vectorizer(self.max_features, self.ngram_max)
        if len(texts) < 50:
            vectorizer.set_params(min_df=1)
        self.pipeline_ = Pipeline([
            ("tfidf", vectorizer),
            ("lr", LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)),
        ]).fit(texts, labels)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.pipeline_.predict_proba(check_texts(X, self.kind)), dtype=np.float64)


class TfidfKnn(DetectorBase):
    """One-class: mean cosine distance to the ``k`` nearest *normal* training texts in TF-IDF space.

    Fitted on normal samples only (labels, if given, are ignored). A text far from every normal
    mail is an anomaly; the distance becomes a raw probability through
    :func:`~cascade.detectors.base.anomaly_probability`, for the calibrator to fix.
    """

    kind = "tfidf-knn"
    modality = "text"
    one_class = True
    _json_state = ("classes_",)
    _estimator_state = ("vectorizer_", "neighbours_")
    _array_state = ("reference_",)

    def __init__(self, k: int = 5, max_features: int = 50_000, ngram_max: int = 1) -> None:
        self.k = k
        self.max_features = max_features
        self.ngram_max = ngram_max

    def fit(self, X: Sequence[str], y: np.ndarray | None = None) -> Self:
        texts = check_texts(X, self.kind)
        if len(texts) <= self.k:
            raise ValueError(f"detector '{self.kind}' needs more than k={self.k} normal texts, got {len(texts)}")
        self.vectorizer_ = _vectorizer(self.max_features, self.ngram_max).fit(texts)
        matrix = self.vectorizer_.transform(texts)
        self.neighbours_ = NearestNeighbors(n_neighbors=self.k, metric="cosine", algorithm="brute").fit(matrix)
        distances, _ = self.neighbours_.kneighbors(n_neighbors=self.k)  # leave-one-out: each text excludes itself
        self.reference_ = score_reference(distances.mean(axis=1))
        self.classes_ = np.array([0, 1])
        return self

    def anomaly_score(self, X: Sequence[str]) -> np.ndarray:
        """Mean cosine distance to the ``k`` nearest normal training texts (higher = more anomalous)."""
        self._check_fitted()
        distances, _ = self.neighbours_.kneighbors(self.vectorizer_.transform(check_texts(X, self.kind)))
        return np.asarray(distances.mean(axis=1), dtype=np.float64)

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        return anomaly_probability(self.anomaly_score(X), self.reference_)
