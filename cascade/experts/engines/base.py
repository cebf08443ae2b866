"""What an engine does: score label tokens after prompts, and generate a short answer.

Engines take token ids (built once by :class:`~cascade.experts.tokens.PromptEncoder`), so every
backend sees the same prompts. ``score`` returns the label tokens' log-probabilities with
generation restricted to those tokens, i.e. normalised over the labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cascade.experts.errors import ExpertError


@dataclass(frozen=True)
class Generation:
    text: str
    completion_tokens: int


class Engine(Protocol):
    def start(self) -> None:
        """Load the model now (otherwise the first sync call does)."""
        ...

    async def astart(self) -> None:
        """Load the model for async use without blocking the running loop."""
        ...

    def score(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        """Label log-probabilities ``(n, k)`` for the next token after each prompt."""
        ...

    async def ascore(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        ...

    def generate(self, prompt: list[int], max_tokens: int) -> Generation:
        """Greedy continuation of at most ``max_tokens`` tokens."""
        ...

    async def agenerate(self, prompt: list[int], max_tokens: int) -> Generation:
        ...

    def close(self) -> None:
        ...


def label_row(top: Mapping[int, float], label_token_ids: Sequence[int]) -> np.ndarray:
    """The label log-probabilities out of one returned top-logprobs mapping (token id -> logprob)."""
    missing = [t for t in label_token_ids if t not in top]
    if missing:
        raise ExpertError(
            f"label tokens {missing} are missing from the returned log-probabilities; the engine must run with "
            "logprobs_mode='processed_logprobs' (server flag --logprobs-mode processed_logprobs) so that the "
            "label-restricted distribution is returned"
        )
    return np.array([top[t] for t in label_token_ids], dtype=np.float64)
