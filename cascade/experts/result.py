"""What an expert returns: label probabilities with per-sample usage, and explanations.

>>> import numpy as np
>>> r = ExpertResult.from_arrays(np.array([[0.2, 0.8]]), prompt_tokens=[120], completion_tokens=[1],
...                              latency_s=[0.05], cost=[1.0], truncated=[False], label_names=("ham", "spam"))
>>> ExpertResult.concat([r, r]).probs.shape
(2, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ExpertResult:
    """Label probabilities ``(n, k)`` and what answering each sample took.

    ``latency_s`` is each sample's share of the call's wall time (the call's wall time divided
    evenly over its samples, prompt building and retrieval included), so ``latency_s.sum()`` is
    the call's wall time. ``truncated`` marks samples whose input was cut to fit the token budget.
    """

    probs: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    latency_s: np.ndarray
    cost: np.ndarray
    truncated: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n, k = self.probs.shape if self.probs.ndim == 2 else (-1, -1)
        if n < 0 or k != len(self.label_names):
            raise ValueError(f"probs must be (n, {len(self.label_names)}), got {self.probs.shape}")
        for name in ("prompt_tokens", "completion_tokens", "latency_s", "cost", "truncated"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")

    @classmethod
    def from_arrays(cls, probs: Any, *, prompt_tokens: Any, completion_tokens: Any, latency_s: Any,
                    cost: Any, truncated: Any, label_names: Sequence[str]) -> ExpertResult:
        """Build a result from array-likes, fixing the dtypes."""
        return cls(
            probs=np.asarray(probs, dtype=np.float64),
            prompt_tokens=np.asarray(prompt_tokens, dtype=np.int64).reshape(-1),
            completion_tokens=np.asarray(completion_tokens, dtype=np.int64).reshape(-1),
            latency_s=np.asarray(latency_s, dtype=np.float64).reshape(-1),
            cost=np.asarray(cost, dtype=np.float64).reshape(-1),
            truncated=np.asarray(truncated, dtype=bool).reshape(-1),
            label_names=tuple(label_names),
        )

    @classmethod
    def tokenless(cls, probs: Any, elapsed_s: float, cost_per_sample: float,
                  label_names: Sequence[str]) -> ExpertResult:
        """A result of a model that spends no tokens (the vote control, a CNN): the call's time shared evenly."""
        n = len(probs)
        return cls.from_arrays(probs, prompt_tokens=np.zeros(n), completion_tokens=np.zeros(n),
                               latency_s=np.full(n, elapsed_s / max(n, 1)), cost=np.full(n, cost_per_sample),
                               truncated=np.zeros(n, dtype=bool), label_names=label_names)

    @classmethod
    def empty(cls, label_names: Sequence[str]) -> ExpertResult:
        """A result with no samples."""
        return cls.from_arrays(np.zeros((0, len(label_names))), prompt_tokens=[], completion_tokens=[],
                               latency_s=[], cost=[], truncated=[], label_names=label_names)

    @classmethod
    def concat(cls, results: Sequence[ExpertResult]) -> ExpertResult:
        """Stack results of the same labels in order."""
        if not results:
            raise ValueError("concat needs at least one result")
        labels = results[0].label_names
        if any(r.label_names != labels for r in results):
            raise ValueError(f"cannot concat results with different labels: {sorted({r.label_names for r in results})}")
        return cls(**{name: np.concatenate([getattr(r, name) for r in results]) for name in _ARRAYS},
                   label_names=labels)

    def __len__(self) -> int:
        return len(self.probs)

    @property
    def predictions(self) -> np.ndarray:
        """Index of the most probable label per sample."""
        return self.probs.argmax(axis=1)


_ARRAYS = ("probs", "prompt_tokens", "completion_tokens", "latency_s", "cost", "truncated")


@dataclass(frozen=True)
class Explanation:
    """A short generated rationale and the chat so far.

    Pass ``history`` back to ``Expert.explain(text, question=..., history=...)`` to ask a
    follow-up question about the same sample.
    """

    text: str
    history: list[dict[str, str]] = field(repr=False)
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost: float
    truncated: bool
