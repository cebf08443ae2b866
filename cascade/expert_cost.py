"""The predicted cost of one expert call for each sample, under the configured cost model.

A learned deferral policy can weigh what deferring a sample gains against what its expert call
costs. For an LLM the call's cost grows with the prompt: a fixed frame (system message, chat
template, tags, the retrieved shots) plus the judged sample cut to ``max_input_tokens``, and one
generated token (the label word). The sample's share is estimated from its length at
``CHARS_PER_TOKEN`` characters per token (feature rows as the expert writes them,
:func:`cascade.experts.prompts.serialize_rows`). Experts that read no prompt (kNN vote, CNN) cost
``expert_per_call`` for every sample, so the column is constant and a policy learns nothing from it.

>>> from cascade.types import CostModel
>>> prices = CostModel(expert_per_call=0.0, expert_per_1k_prompt_tokens=1.0)
>>> PredictedExpertCost(prices, prompted=True, frame_tokens=100, max_input_tokens=384).transform(["x" * 400]).tolist()
[0.2]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.types import CostModel

CHARS_PER_TOKEN = 4
"""rough characters per token of English text and serialised numbers"""
FRAME_TOKENS = 100
"""system message, chat template and tags around one sample"""
SHOT_FRAME_TOKENS = 12
"""the turn markers and answer word around one retrieved shot"""
PROMPTED_KINDS = ("vllm", "openai", "transformers")
"""expert kinds that read a prompt; the others (knn-vote, cnn) bill per call only"""


class PredictedExpertCost:
    """Cost units of one expert call per sample: ``cost.expert_cost(prompt tokens, 1)`` for a prompted expert.

    ``frame_tokens`` counts every prompt token that is not the sample itself; the sample counts
    ``ceil(characters / CHARS_PER_TOKEN)`` tokens, at most ``max_input_tokens``.
    """

    def __init__(self, cost: CostModel, prompted: bool, frame_tokens: int = FRAME_TOKENS,
                 max_input_tokens: int = 384) -> None:
        self.cost = cost
        self.prompted = prompted
        self.frame_tokens = frame_tokens
        self.max_input_tokens = max_input_tokens

    @classmethod
    def from_config(cls, config: Any) -> PredictedExpertCost:
        """The estimate for a :class:`~cascade.config.CascadeConfig`'s expert and cost model."""
        expert = config.expert
        frame = FRAME_TOKENS + expert.shots * (expert.shot_max_tokens + SHOT_FRAME_TOKENS)
        return cls(config.cost, expert.kind in PROMPTED_KINDS, frame, expert.max_input_tokens)

    def prompt_tokens(self, X: Sequence[str] | np.ndarray) -> np.ndarray:
        """Estimated prompt tokens per sample (0 for an expert that reads no prompt)."""
        if not self.prompted:
            return np.zeros(len(X))
        sample = np.ceil(input_chars(X) / CHARS_PER_TOKEN)
        return self.frame_tokens + np.minimum(sample, self.max_input_tokens)

    def transform(self, X: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(n,)`` predicted cost units of one expert call per sample."""
        completion = 1.0 if self.prompted else 0.0
        return np.asarray(self.cost.expert_cost(self.prompt_tokens(X), completion), dtype=np.float64).reshape(-1)

    def options(self) -> dict[str, Any]:
        """JSON-able settings, saved with the small tier."""
        return {"cost": self.cost.model_dump(), "prompted": self.prompted, "frame_tokens": self.frame_tokens,
                "max_input_tokens": self.max_input_tokens}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PredictedExpertCost:
        """The inverse of :meth:`options`."""
        return cls(CostModel.model_validate(options["cost"]), bool(options["prompted"]),
                   int(options["frame_tokens"]), int(options["max_input_tokens"]))


def input_chars(X: Sequence[str] | np.ndarray) -> np.ndarray:
    """Characters of each sample as an expert reads it: the text, or the row ``"f1: v1, f2: v2, ..."``."""
    if len(X) and isinstance(X[0], str):
        return np.fromiter((len(text) for text in X), dtype=np.float64, count=len(X))
    rows = np.asarray(X, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"a cost estimate reads texts or 2-D feature rows, got shape {rows.shape}")
    columns = rows.shape[1]
    names = sum(len(f"f{j + 1}: ") for j in range(columns)) + 2 * max(columns - 1, 0)
    return np.char.str_len(np.char.mod("%.4g", rows)).sum(axis=1).astype(np.float64) + names
