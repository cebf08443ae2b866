"""What a batch's decisions and one request's answers are made of: the small tier's scores, the
triage (policy scores and budget decisions), then per-sample answer columns that the expert's answers
overwrite where it was asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


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
    started: float = 0.0
    """``time.perf_counter()`` when the batch reached the small tier (trace spans)"""

    def split(self, sizes: Sequence[int]) -> list[Triage]:
        """One triage per request, for requests of ``sizes`` samples in order."""
        bounds = np.cumsum(sizes)[:-1]
        columns = (self.small.probabilities, self.small.features, *(getattr(self, name) for name in _COLUMNS))
        return [Triage(SmallScores(probabilities, features), *rest, small_ms=self.small_ms, policy_ms=self.policy_ms,
                       started=self.started)
                for probabilities, features, *rest in zip(*(np.split(column, bounds) for column in columns))]

    @classmethod
    def join(cls, parts: Sequence[Triage]) -> Triage:
        """One triage from consecutive parts (one request cut in chunks)."""
        if len(parts) == 1:
            return parts[0]
        small = SmallScores(np.concatenate([p.small.probabilities for p in parts]),
                            np.concatenate([p.small.features for p in parts]))
        return cls(small, *(np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMNS),
                   small_ms=max(p.small_ms for p in parts), policy_ms=max(p.policy_ms for p in parts),
                   started=min(p.started for p in parts))


_COLUMNS = ("scores", "thresholds", "defer", "forced", "covered")


@dataclass
class Answers:
    """Per-sample answer columns for one request, starting from the small tier's."""

    probabilities: np.ndarray
    source: np.ndarray
    """small, expert (any tier after the small one) or abstained"""
    tier: np.ndarray
    """the answering tier's name (None: abstained)"""
    cost: np.ndarray
    degraded: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    rationales: list[str | None]

    @classmethod
    def from_small(cls, probabilities: np.ndarray, small_cost: float) -> "Answers":
        n = len(probabilities)
        return cls(probabilities=np.array(probabilities, dtype=float), source=np.full(n, "small", dtype=object),
                   tier=np.full(n, "small", dtype=object), cost=np.full(n, small_cost), degraded=np.zeros(n, dtype=bool),
                   prompt_tokens=np.zeros(n, dtype=np.int64), completion_tokens=np.zeros(n, dtype=np.int64),
                   rationales=[None] * n)

    def take_expert(self, index: np.ndarray, result: Any, tier: str = "expert") -> None:
        """``tier``'s answers for the samples at ``index``; its cost and tokens add to what they spent."""
        self.probabilities[index] = result.probs
        self.source[index] = "expert"
        self.tier[index] = tier
        self.cost[index] += result.cost
        self.prompt_tokens[index] += result.prompt_tokens
        self.completion_tokens[index] += result.completion_tokens

    def abstain(self, index: np.ndarray) -> None:
        """No tier answers the samples at ``index`` confidently: they go to review (no label)."""
        self.source[index] = "abstained"
        self.tier[index] = None

    def answered_by(self, tiers: list[str] | None = None) -> dict[str, int]:
        """Samples per answering tier (``tiers``: every one to count, in order; default small and expert),
        and ``abstained`` when any was."""
        names = tiers or ["small", "expert"]
        counts = {name: int(np.count_nonzero(self.tier == name)) for name in names}
        abstained = int(np.count_nonzero(self.source == "abstained"))
        return {**counts, "abstained": abstained} if abstained or tiers else counts

    def take_rationale(self, i: int, explanation: Any) -> None:
        self.rationales[i] = explanation.text
        self.cost[i] += explanation.cost
        self.prompt_tokens[i] += explanation.prompt_tokens
        self.completion_tokens[i] += explanation.completion_tokens
