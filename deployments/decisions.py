"""What the service writes to the decision log for one request, and how feedback reaches the log.

Each verdict gets a fresh ``decision_id`` (returned in the response); :func:`decision_rows` builds
the :class:`~cascade.decision_log.Decision` rows from the request's triage and answers, and
:meth:`~cascade.decision_log.DecisionLog.record` only enqueues them (a writer thread inserts them
off the request path). The small tier's calibrated probabilities are logged, not the answer's, so
that a late true label tells whether the small tier was right at every threshold (what
re-certification needs).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.decision_log import Decision, DecisionLog
from deployments.answers import Answers, Triage
from deployments.payloads import Payload
from deployments.schemas import FeedbackOutcome, FeedbackResponse, ReviewEntry, ReviewResponse
from policies.ties import NO_TIE_BREAK, keys_for_ties, tied


class FeedbackDisabled(RuntimeError):
    """The app keeps no decision log (``serve.decision_log.enabled: false``): nothing to attach labels to."""


def content_hash(sample: str | np.ndarray) -> str:
    """A short SHA-256 of a text (UTF-8) or a feature row (its float64 bytes): which sample, not the sample."""
    raw = sample.encode("utf-8", "surrogatepass") if isinstance(sample, str) else \
        np.ascontiguousarray(sample, dtype=float).tobytes()
    return hashlib.sha256(raw).hexdigest()[:32]


def decision_rows(ids: Sequence[str], payload: Payload, triage: Triage, answers: Answers, labels: np.ndarray,
                  certified: np.ndarray, certificate: dict[str, Any] | None, certificate_id: str | None,
                  app_version: str, tenant: str | None = None) -> list[Decision]:
    """One logged decision per sample of a request (in order)."""
    now = time.time()
    scores, thresholds = triage.scores, triage.thresholds
    keys = np.full(len(ids), np.nan)
    tie_seed = (certificate or {}).get("tie_seed")
    if tie_seed is not None and float((certificate or {}).get("tie_break", NO_TIE_BREAK)) < NO_TIE_BREAK and len(ids):
        at_threshold = keys_for_ties(scores, float(thresholds[0]), payload, int(tie_seed))
        if at_threshold is not None:
            at = tied(scores, thresholds)
            keys[at] = at_threshold[at]
    small = triage.small.probabilities
    wanted = triage.defer | triage.forced
    served = labels[answers.probabilities.argmax(axis=1)]
    return [
        Decision(id=ids[i], time=now, content_hash=content_hash(payload[i]),
                 probabilities=tuple(float(p) for p in small[i]), deferral_score=float(scores[i]),
                 threshold=float(thresholds[i]), tie_key=None if np.isnan(keys[i]) else float(keys[i]),
                 tier=str(answers.source[i]), label=str(served[i]),  # type: ignore[arg-type]
                 deferred=bool(wanted[i]), cost=float(answers.cost[i]), degraded=bool(answers.degraded[i]),
                 forced=bool(triage.forced[i]), certified=bool(certified[i]), certificate_id=certificate_id,
                 app_version=app_version, tenant=tenant)
        for i in range(len(ids))
    ]


async def attach_feedback(log: DecisionLog | None, items: Sequence[Any], labels: Sequence[str]) -> FeedbackResponse:
    """Attach ``items`` (``decision_id``, ``label``) in a worker thread; one outcome per item."""
    import asyncio

    if log is None:
        raise FeedbackDisabled("this app keeps no decision log (serve.decision_log.enabled: false), so there is "
                               "nothing to attach labels to")
    pairs = [(item.decision_id, item.label) for item in items]
    results = await asyncio.to_thread(log.attach_feedback, pairs, list(labels))
    outcomes = [FeedbackOutcome(decision_id=r.id, status=r.status) for r in results]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return FeedbackResponse(results=outcomes, counts=counts)


async def pending_review(queue: Any, limit: int, tenant: str | None, after: float | None,
                         labels: Sequence[str]) -> ReviewResponse:
    """The review queue's pending items, read in a worker thread."""
    import asyncio

    if queue is None:
        raise FeedbackDisabled("this app keeps no decision log (serve.decision_log.enabled: false), so abstained "
                               "samples are not kept for review")
    items, pending = await asyncio.to_thread(lambda: (queue.pending(limit, tenant, after), queue.count(tenant)))
    entries = [ReviewEntry(decision_id=i.decision_id, time=i.time, tenant=i.tenant, sample=i.sample) for i in items]
    return ReviewResponse(items=entries, labels=list(labels), pending=pending)
