"""The k labelled pool samples nearest to each query, for few-shot prompts and the control vote.

Texts are compared by MiniLM cosine similarity (:class:`cascade.embeddings.Embedder`, cached on
disk); feature rows by Euclidean distance after z-scoring with the pool's mean and spread (a
missing value, NaN, counts as the pool's mean).
Each neighbour comes with a weight in ``[0, 1]`` (cosine clipped at 0, or ``1 / (1 + distance)``).
The pool is used as given: a query that is itself in the pool retrieves itself, except inside
:meth:`NeighbourRetriever.leaving_out_self` (leave-one-out: a pool sample scored there never sees its
own label, e.g. to calibrate an expert on its own labelled pool).

>>> retriever = NeighbourRetriever(train, k=4)           # doctest: +SKIP
>>> index, weight = retriever.query(["Cheap meds!"])      # doctest: +SKIP
>>> index.shape, train.y[index]                           # doctest: +SKIP
((1, 4), array([[1, 1, 1, 0]]))
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from cascade.data import Dataset
from cascade.embeddings import Embedder, shared_embedder
from cascade.linalg import cross
from cascade.experts.prompts import Modality
from cascade.standardise import column_moments, standardised

_QUERY_CHUNK = 1024


class NeighbourRetriever:
    """Nearest labelled neighbours from a pool :class:`~cascade.data.Dataset` (texts or features)."""

    def __init__(self, pool: Dataset, k: int, embedder: Embedder | None = None) -> None:
        if pool.modality not in ("text", "features"):
            raise ValueError(f"few-shot retrieval needs a text or feature pool, got {pool.modality}")
        if not 1 <= k <= len(pool):
            raise ValueError(f"k={k} neighbours from a pool of {len(pool)}")
        self.k = k
        self.modality: Modality = "text" if pool.modality == "text" else "features"
        self.texts = pool.texts
        self.features = pool.features
        self.labels = np.asarray(pool.y, dtype=np.int64)
        self.label_names = pool.label_names
        if self.modality == "text":
            self._embedder = embedder or shared_embedder()
            self._vectors = self._embedder.encode(pool.texts or [])
        else:
            features = np.asarray(pool.features, dtype=np.float64)
            self._mean, spread = column_moments(features)
            self._scale = np.where(spread > 0, spread, 1.0)
            self._vectors = standardised(features, self._mean, self._scale)
        self._leave_out = False
        self._pool_keys: dict[str, list[int]] | None = None

    @contextmanager
    def leaving_out_self(self) -> Iterator[None]:
        """Within this block a query never retrieves a pool sample identical to it (same text, or the same
        feature row): scoring the pool itself then is leave-one-out. Needs ``k`` + 1 samples in the pool."""
        if len(self.labels) <= self.k:
            raise ValueError(f"leave-one-out retrieval of k={self.k} neighbours needs a pool of at least {self.k + 1}, "
                             f"got {len(self.labels)}")
        if self._pool_keys is None:
            keys: dict[str, list[int]] = {}
            for i, key in enumerate(_content_keys(self.texts if self.modality == "text" else self.features)):
                keys.setdefault(key, []).append(i)
            self._pool_keys = keys
        self._leave_out = True
        try:
            yield
        finally:
            self._leave_out = False

    def query(self, X: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pool indices ``(n, k)`` (nearest first) and their weights ``(n, k)``."""
        if self.modality == "text":
            if isinstance(X, np.ndarray) and X.dtype.kind in "fiu":
                raise ValueError("this pool holds texts; query it with texts, not feature rows")
            queries = self._embedder.encode(list(X))
        else:
            queries = np.asarray(X, dtype=np.float64)
            if queries.ndim != 2 or queries.shape[1] != self._vectors.shape[1]:
                raise ValueError(f"this pool holds rows of {self._vectors.shape[1]} features; got {queries.shape}")
            queries = standardised(queries, self._mean, self._scale)
        own = self._own_samples(X) if self._leave_out else None
        parts = [self._nearest(queries[start:start + _QUERY_CHUNK], None if own is None else own[start:start + _QUERY_CHUNK])
                 for start in range(0, len(queries), _QUERY_CHUNK)]
        if not parts:
            return np.zeros((0, self.k), dtype=np.int64), np.zeros((0, self.k))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _own_samples(self, X: Sequence[str] | np.ndarray) -> list[list[int]]:
        """Per query: the pool indices holding the same content (left out of its neighbours)."""
        keys = self._pool_keys or {}
        return [keys.get(key, []) for key in _content_keys(X)]

    def _nearest(self, queries: np.ndarray, own: list[list[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.modality == "text":
            closeness = cross(queries, self._vectors)
        else:
            products = cross(queries, self._vectors)
            squared = (queries ** 2).sum(1)[:, None] + (self._vectors ** 2).sum(1)[None, :] - 2 * products
            closeness = -np.sqrt(np.maximum(squared, 0.0))
        for row, indices in enumerate(own or []):
            closeness[row, indices] = -np.inf  # weight 0 should a query have fewer than k other samples
        top = np.argpartition(-closeness, self.k - 1, axis=1)[:, : self.k]
        order = np.argsort(-np.take_along_axis(closeness, top, axis=1), axis=1, kind="stable")
        index = np.take_along_axis(top, order, axis=1)
        best = np.take_along_axis(closeness, index, axis=1)
        weight = np.clip(best, 0.0, 1.0) if self.modality == "text" else 1.0 / (1.0 - best)
        return index, weight


def _content_keys(X: Sequence[str] | np.ndarray | None) -> list[str]:
    """A digest per sample: of the text, or of the feature row (every NaN alike)."""
    if X is None:
        return []
    if isinstance(X, np.ndarray) and X.dtype.kind in "fiu":
        rows = np.where(np.isnan(X), np.nan, X).astype(np.float64) if X.dtype.kind == "f" else X.astype(np.float64)
        return [hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest() for row in rows]
    return [hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest() for text in X]
