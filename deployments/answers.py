"""What one request's answers are made of: the small tier's scores, then per-sample answer columns
that the expert's answers overwrite where it was asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade.types import Sample
from deployments.schemas import Modality

Payload = list[str] | np.ndarray


@dataclass(frozen=True)
class SmallScores:
    """What the detector returns for a batch: calibrated probabilities and the policy's features."""

    probabilities: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class Triage:
    """A batch through the small tier, the policy and the budget: what to answer and what to defer."""

    small: SmallScores
    scores: np.ndarray
    thresholds: np.ndarray
    defer: np.ndarray
    forced: np.ndarray
    """deferred by the rule, answered by the small tier (hard cap or no lease allowance)"""
    covered: np.ndarray
    """the certificate covers the decision (:class:`policies.online.Decisions`)"""
    small_ms: float
    policy_ms: float = 0.0
    """the batch's policy scores, budget decisions and batch metrics, in milliseconds"""

    def split(self, sizes: Sequence[int]) -> list[Triage]:
        """One triage per request, for requests of ``sizes`` samples in order."""
        bounds = np.cumsum(sizes)[:-1]
        columns = (self.small.probabilities, self.small.features, *(getattr(self, name) for name in _COLUMNS))
        return [Triage(SmallScores(probabilities, features), *rest, small_ms=self.small_ms, policy_ms=self.policy_ms)
                for probabilities, features, *rest in zip(*(np.split(column, bounds) for column in columns))]

    @classmethod
    def join(cls, parts: Sequence[Triage]) -> Triage:
        """One triage from consecutive parts (one request cut in chunks)."""
        if len(parts) == 1:
            return parts[0]
        small = SmallScores(np.concatenate([p.small.probabilities for p in parts]),
                            np.concatenate([p.small.features for p in parts]))
        return cls(small, *(np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMNS),
                   small_ms=max(p.small_ms for p in parts), policy_ms=max(p.policy_ms for p in parts))


_COLUMNS = ("scores", "thresholds", "defer", "forced", "covered")


@dataclass
class Answers:
    """Per-sample answer columns for one request, starting from the small tier's."""

    probabilities: np.ndarray
    source: np.ndarray
    cost: np.ndarray
    degraded: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    rationales: list[str | None]

    @classmethod
    def from_small(cls, probabilities: np.ndarray, small_cost: float) -> "Answers":
        n = len(probabilities)
        return cls(probabilities=np.array(probabilities, dtype=float), source=np.full(n, "small", dtype=object),
                   cost=np.full(n, small_cost), degraded=np.zeros(n, dtype=bool),
                   prompt_tokens=np.zeros(n, dtype=np.int64), completion_tokens=np.zeros(n, dtype=np.int64),
                   rationales=[None] * n)

    def take_expert(self, index: np.ndarray, result: Any) -> None:
        self.probabilities[index] = result.probs
        self.source[index] = "expert"
        self.cost[index] += result.cost
        self.prompt_tokens[index] = result.prompt_tokens
        self.completion_tokens[index] = result.completion_tokens

    def take_rationale(self, i: int, explanation: Any) -> None:
        self.rationales[i] = explanation.text
        self.cost[i] += explanation.cost
        self.prompt_tokens[i] += explanation.prompt_tokens
        self.completion_tokens[i] += explanation.completion_tokens


class InvalidSamples(ValueError):
    """Samples the small tier cannot take (wrong feature count, NaN or inf): a 422 for their request only."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in problems))


MAX_PROBLEMS = 5
"""bad samples named one by one in a 422 (the rest are counted)"""


def payload_of(samples: Sequence[Sample], modality: Modality, n_features: int | None = None) -> Payload:
    """The samples as the small tier takes them: texts, or checked feature rows (:func:`feature_rows`)."""
    if modality == "text":
        return [str(s.text) for s in samples]
    return feature_rows([s.features or [] for s in samples], n_features)


def feature_rows(rows: Sequence[Sequence[float]], n_features: int | None) -> np.ndarray:
    """``rows`` as a finite ``(n, n_features)`` float array, checked in numpy; :class:`InvalidSamples`
    names each sample with the wrong width (or a width unlike the first's when ``n_features`` is
    unknown) or with NaN / inf.

    >>> feature_rows([[0.5, 1.0], [2.0, 3.0]], 2).shape
    (2, 2)
    >>> feature_rows([[0.5, 1.0], [2.0]], 2)
    Traceback (most recent call last):
    ...
    deployments.answers.InvalidSamples: samples.1.features: expected 2 features, got 1
    """
    widths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    expected = int(widths[0]) if n_features is None else n_features
    wrong = np.flatnonzero(widths != expected)
    if wrong.size:
        raise InvalidSamples(_named(wrong, lambda i: f"expected {expected} features, got {widths[i]}"))
    array = np.asarray(rows, dtype=np.float64)
    bad = ~np.isfinite(array)
    flagged = np.flatnonzero(bad.any(axis=1))
    if flagged.size:
        raise InvalidSamples(_named(flagged, lambda i: "features must be finite numbers; NaN or inf at "
                                                      f"positions {np.flatnonzero(bad[i])[:MAX_PROBLEMS].tolist()}"))
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
