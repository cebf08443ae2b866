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


def payload_of(samples: Sequence[Sample], modality: Modality) -> Payload:
    if modality == "text":
        return [str(s.text) for s in samples]
    return np.asarray([s.features for s in samples], dtype=np.float64)


def take(payload: Payload, index: np.ndarray) -> Payload:
    return [payload[i] for i in index] if isinstance(payload, list) else payload[index]
