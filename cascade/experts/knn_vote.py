"""The no-LLM control expert: a similarity-weighted vote of the k retrieved labelled neighbours.

It uses exactly the retrieval that feeds the LLM's few-shot prompts, so every experiment can show
whether the LLM adds anything beyond its examples. Probabilities are smoothed,
``p_c = (sum of weights voting c + s) / (sum of weights + K s)``, so they are never exactly 0 or 1.
It spends no tokens; each answer costs ``CostModel.small_per_call`` (it runs no LLM).

>>> control = KnnVoteExpert(NeighbourRetriever(train, k=4), ["ham", "spam"])  # doctest: +SKIP
>>> control.judge(["Cheap meds, click now"]).probs                            # doctest: +SKIP
array([[0.16, 0.84]])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.experts.errors import ExpertError
from cascade.experts.prompts import serialize_rows
from cascade.experts.protocol import ExpertInput, InProcessExpert
from cascade.experts.result import ExpertResult, Explanation
from cascade.experts.retrieval import NeighbourRetriever
from cascade.types import CostModel


class KnnVoteExpert(InProcessExpert):
    """Votes the labels of the k nearest pool samples; same :class:`ExpertResult`, zero tokens."""

    def __init__(self, retriever: NeighbourRetriever, label_names: Sequence[str], smoothing: float = 0.5,
                 cost: CostModel | None = None) -> None:
        if len(label_names) != len(retriever.label_names):
            raise ValueError(f"{len(label_names)} label words for a pool with labels {retriever.label_names}")
        if smoothing <= 0:
            raise ValueError("smoothing must be > 0 so that probabilities are never exactly 0 or 1")
        self.retriever = retriever
        self.label_names = tuple(label_names)
        self.smoothing = smoothing
        self.cost = cost or CostModel()

    def judge(self, X: ExpertInput) -> ExpertResult:
        """Smoothed weighted vote of each sample's k retrieved neighbours."""
        start = time.perf_counter()
        if len(X) == 0:
            return ExpertResult.empty(self.label_names)
        index, weight = self.retriever.query(X)
        k = len(self.label_names)
        votes = (weight[:, :, None] * (self.retriever.labels[index][:, :, None] == np.arange(k))).sum(axis=1)
        probs = (votes + self.smoothing) / (votes.sum(axis=1, keepdims=True) + k * self.smoothing)
        return ExpertResult.tokenless(probs, time.perf_counter() - start, self.cost.small_per_call, self.label_names)

    def explain(self, sample: str | np.ndarray, question: str | None = None,
                history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        """Which labelled neighbours decided the vote (no text generation, so no follow-ups)."""
        start = time.perf_counter()
        if question is not None or history:
            raise ExpertError("the knn-vote control expert generates no text, so it cannot answer questions")
        query: Any = [sample] if isinstance(sample, str) else np.asarray(sample, dtype=float).reshape(1, -1)
        index, weight = self.retriever.query(query)
        names = [self.label_names[y] for y in self.retriever.labels[index[0]]]
        counts = ", ".join(f"{names.count(name)} {name}" for name in self.label_names if name in names)
        similar = ", ".join(f"{w:.2f}" for w in weight[0])
        text = f"The {len(names)} most similar labelled examples are {counts} (weights {similar}, nearest first)."
        shown = sample if isinstance(sample, str) else serialize_rows(query)[0]
        history = [{"role": "user", "content": shown}, {"role": "assistant", "content": text}]
        return Explanation(text=text, history=history,
                           prompt_tokens=0, completion_tokens=0, latency_s=time.perf_counter() - start,
                           cost=self.cost.small_per_call, truncated=False)
