"""What a request's samples become before any tier sees them: texts or checked feature rows (the
*payload*), with the helpers that join requests into a batch and cut them apart again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.types import Sample
from deployments.schemas import Modality

Payload = list[str] | np.ndarray


class InvalidSamples(ValueError):
    """Samples the small tier cannot take (wrong feature count, NaN or inf): a 422 for their request only."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in problems))


MAX_PROBLEMS = 5
"""bad samples named one by one in a 422 (the rest are counted)"""


def payload_of(samples: Sequence[Sample], modality: Modality, n_features: int | None = None,
               missing: bool = False) -> Payload:
    """The samples as the small tier takes them: texts, or checked feature rows (:func:`feature_rows`)."""
    if modality == "text":
        return [str(s.text) for s in samples]
    return feature_rows([s.features or [] for s in samples], n_features, missing)


def feature_rows(rows: Sequence[Sequence[float | None]], n_features: int | None, missing: bool = False) -> np.ndarray:
    """``rows`` as a ``(n, n_features)`` float array, checked in numpy; :class:`InvalidSamples` names each
    sample with the wrong width (or a width unlike the first's when ``n_features`` is unknown), with
    inf, or with a missing value (``None``, which JSON sends as ``null``; NaN) when the detector takes
    none (``missing=False``); with ``missing`` a missing value is NaN, as the detector was fitted.

    >>> feature_rows([[0.5, 1.0], [2.0, 3.0]], 2).shape
    (2, 2)
    >>> feature_rows([[0.5, 1.0], [2.0]], 2)
    Traceback (most recent call last):
    ...
    deployments.payloads.InvalidSamples: samples.1.features: expected 2 features, got 1
    """
    widths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    expected = int(widths[0]) if n_features is None else n_features
    wrong = np.flatnonzero(widths != expected)
    if wrong.size:
        raise InvalidSamples(_named(wrong, lambda i: f"expected {expected} features, got {widths[i]}"))
    array = np.asarray(rows, dtype=np.float64)  # None becomes NaN
    bad = np.isinf(array) if missing else ~np.isfinite(array)
    flagged = np.flatnonzero(bad.any(axis=1))
    if flagged.size:
        what = "features must be numbers or null (missing); inf" if missing else \
            "features must be finite numbers (this cascade's detector takes no missing values); NaN, null or inf"
        raise InvalidSamples(_named(flagged, lambda i: f"{what} at positions "
                                                      f"{np.flatnonzero(bad[i])[:MAX_PROBLEMS].tolist()}"))
    return array


def _named(index: np.ndarray, problem: Any) -> list[tuple[str, str]]:
    named = [(f"samples.{i}.features", problem(i)) for i in index[:MAX_PROBLEMS]]
    if index.size > MAX_PROBLEMS:
        named.append(("samples", f"and {index.size - MAX_PROBLEMS} more samples like these"))
    return named


def samples_in(payloads: list[Payload]) -> int:
    """Samples in a batch of requests (the unit ``@serve.batch`` fills up to ``max_batch_size``)."""
    return sum(len(p) for p in payloads)


def joined(payloads: list[Payload]) -> Payload:
    """The samples of several requests as one payload."""
    return [t for p in payloads for t in p] if isinstance(payloads[0], list) else np.concatenate(payloads)


def take(payload: Payload, index: np.ndarray) -> Payload:
    return [payload[i] for i in index] if isinstance(payload, list) else payload[index]
