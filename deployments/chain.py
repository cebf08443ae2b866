"""Serving an N-tier chain: the samples the small tier hands on climb the tiers hop by hop, as the
certified rule says, and what the last tier is unsure of goes to review.

The small tier's hop is the router's usual triage (the rule's first threshold, served fixed by the
budget holder: :func:`deployments.served.load_served`). :meth:`ServedChain.escalate` then asks tier 1
for the samples deferred there, keeps the answers whose deferral score (Chow's, ``1 - max calibrated
probability``, as in tuning) the rule lets tier 1 keep, hands the rest to tier 2, and so on; the last
tier's unsure samples are *abstained*: no label, ``source: "abstained"``, kept for reviewers
(``GET /v1/review``). Each tier has its own deployment, circuit breaker and latency estimate
(:class:`~deployments.expert_calls.ExpertCalls`); all share the request's deadline. A tier that fails
leaves its samples with the previous tier's answer, flagged degraded with the reason (and outside
the certificate), never lost and never abstained for a failure. Each call is billed at its tier's
prices (:meth:`~cascade.config.TierConfig.call_cost`, whatever the expert kind), as tuning billed it.

"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from cascade.config import TierConfig
from cascade.config.tiers import SMALL_TIER
from deployments.answers import Answers
from deployments.contracts import ExpertTier
from deployments.deadline import Deadline
from deployments.expert_calls import ExpertCalls, fallback_reason
from deployments.payloads import Payload, take
from policies.chain_rule import ChainRule
from policies.rules import ConfidencePolicy


@dataclass
class ChainTier:
    """One tier after the small one, as a router replica calls it; ``price`` is its
    :class:`~cascade.config.TierConfig`, which bills each call as tuning billed it."""

    name: str
    expert: ExpertTier
    calls: ExpertCalls
    price: TierConfig


@dataclass(frozen=True)
class HopReport:
    """What one hop did for one request: samples asked, kept, handed on or abstained; its time; why it failed."""

    tier: str
    asked: int
    kept: int
    handed_on: int
    abstained: int
    ms: float
    failed: str = ""


class ServedChain:
    """The tiers after the small one (in chain order) and the certified rule that routes between them."""

    def __init__(self, rule: ChainRule, tiers: Sequence[ChainTier], label_names: Sequence[str]) -> None:
        if tuple(tier.name for tier in tiers) != rule.tiers:
            raise ValueError(f"the served tiers {[t.name for t in tiers]} are not the rule's {list(rule.tiers)}")
        self.rule = rule
        self.tiers = list(tiers)
        self.label_names = tuple(label_names)
        self._score = ConfidencePolicy(n_classes=len(self.label_names)).score

    @property
    def last(self) -> ChainTier:
        return self.tiers[-1]

    async def escalate(self, payload: Payload, deferred: np.ndarray, answers: Answers, reasons: np.ndarray,
                       deadline: Deadline | None = None) -> list[HopReport]:
        """Climb the tiers with the ``deferred`` samples (indices into ``payload``); fill ``answers`` and the
        failed samples' ``reasons`` in place; one report per hop asked."""
        pending, reports = np.asarray(deferred, dtype=np.int64), []
        for hop, tier in enumerate(self.tiers, start=1):
            if pending.size == 0:
                break
            started = time.perf_counter()
            try:
                result = await tier.calls.call(tier.expert.ajudge(take(payload, pending)), deadline)
                if tuple(result.label_names) != self.label_names:
                    raise ValueError(f"tier {tier.name}'s labels {result.label_names} differ from {self.label_names}")
            except Exception as exc:  # a failed tier degrades its samples, never a 5xx
                reason = fallback_reason(exc)
                answers.degraded[pending] = True
                reasons[pending] = reason
                reports.append(HopReport(tier.name, int(pending.size), 0, 0, 0, _ms_since(started), reason))
                break
            ms = _ms_since(started)
            tier.calls.latency.observe(ms)
            cost = tier.price.call_cost(np.asarray(result.prompt_tokens), np.asarray(result.completion_tokens))
            answers.take_expert(pending, replace(result, cost=np.broadcast_to(cost, len(pending)).astype(float)),
                                tier.name)
            stays = self.rule.stays(hop, self._score(np.asarray(result.probs, dtype=float)))
            last = hop == len(self.tiers)
            if last:
                answers.abstain(pending[~stays])
            reports.append(HopReport(tier.name, int(pending.size), int(stays.sum()), 0 if last else int((~stays).sum()),
                                     int((~stays).sum()) if last else 0, ms))
            pending = pending[~stays]
        return reports

    def names(self) -> list[str]:
        """Every tier's name, the small tier first."""
        return [SMALL_TIER, *self.rule.tiers]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
