"""The cascade's decisions, free of Ray and HTTP: small tier first, policy + budget, expert last.

One request goes ``payload`` (validate) → :meth:`CascadeService.triage_batch` (small tier, policy
and budget, once for a batch of requests) → :meth:`CascadeService.answer` (the expert, awaited only
for the deferred samples; the verdicts). :meth:`CascadeService.detect` runs the three for one
request in this process; the Ray Serve router (:mod:`deployments.router`) runs the same three with
``triage_batch`` inside its ``@serve.batch`` method. The tiers are components, not callbacks: the
small tier answers ``score(payload)`` and ``ready()`` (:mod:`deployments.detector`), the expert
``ajudge`` / ``aexplain``.

With more tiers (``tiers`` in the config; :mod:`deployments.chain`) the deferred samples climb them
hop by hop as the certified chain rule says, and what the last tier is unsure of is *abstained*:
answered with no label and kept for reviewers (:class:`cascade.review.ReviewQueue`).

If the expert fails or times out, the deferred samples keep the small tier's verdict, flagged
``degraded``. A :class:`~deployments.breaker.CircuitBreaker` stops asking an expert that keeps
failing, so while it is down deferred samples are answered at the small tier's speed: it opens at
the first :class:`~cascade.experts.errors.ExpertUnavailable` (the replica died, the server refuses
connections), and with an ``expert_probe`` the expert's readiness, checked in the background after
each cool-down, decides when a request may try it again (no request waits on an expert still gone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade import __version__
from cascade.decision_log import DecisionLog, new_decision_id
from cascade.review import ReviewItem, ReviewQueue
from cascade.types import CostModel, Sample, Verdict
from deployments.answers import Answers, Triage
from deployments.chain import ServedChain
from deployments.payloads import InvalidSamples, Payload, feature_rows, joined, payload_of, take
from deployments.breaker import CircuitBreaker
from deployments.deadline import Deadline
from deployments.expert_calls import ExpertCalls, fallback_reason, worst_readiness
from deployments.tracing import RequestTrace, carrying, released
from policies.tenants import UnknownTenant
from deployments.decisions import attach_feedback, decision_rows, pending_review
from deployments.contracts import (
    Budget,
    ExpertTier,
    InvalidBudget,
    ServiceSettings,
    SmallTierClient,
    SmallTierUnavailable,
    TierProbe,
)
from deployments.metrics import CascadeMetrics, _tag
from deployments.status import budget_state
from deployments.schemas import (
    BudgetState,
    BudgetUpdate,
    DetectResponse,
    ExplainRequest,
    ExplainResponse,
    FeedbackRequest,
    FeedbackResponse,
    ReviewResponse,
    Health,
    Modality,
    Readiness,
)
from policies.base import DeferralPolicy
from policies.ties import canonical

class CascadeService:
    """Answers detect / explain / budget requests; see the module docstring."""

    def __init__(
        self,
        settings: ServiceSettings,
        small: SmallTierClient,
        expert: ExpertTier,
        policy: DeferralPolicy,
        controller: Budget | dict[str | None, Budget],
        cost: CostModel,
        metrics: CascadeMetrics | None = None,
        expert_probe: TierProbe | None = None,
        breaker: CircuitBreaker | None = None,
        decision_log: DecisionLog | None = None,
        tracer: Any = None,
        chain: ServedChain | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or CascadeMetrics()
        self._small = small
        self._expert = expert
        self._policy = policy
        self._controllers = controller if isinstance(controller, dict) else {None: controller}  # by tenant
        self._cost = cost
        self._labels = np.asarray(settings.label_names)
        self.chain = chain  # more tiers: the last one explains, and its breaker is the one readiness shows first
        self.expert_calls = chain.last.calls if chain is not None else ExpertCalls(settings, expert_probe, breaker)
        self.breaker = self.expert_calls.breaker
        self.decision_log = decision_log
        self.review_queue = ReviewQueue(decision_log) if decision_log is not None else None
        self.tracer = tracer  # OpenTelemetry (deployments.tracing); None: no spans

    @property
    def _controller(self) -> Budget:
        """The budget of an app without tenants (or the first tenant's)."""
        return self._controllers.get(None) or next(iter(self._controllers.values()))

    def budget_of(self, tenant: str | None) -> Budget:
        """A tenant's budget; :class:`~policies.tenants.UnknownTenant` (404) for one the app does not have."""
        try:
            return self._controllers[tenant]
        except KeyError:
            names = sorted(str(name) for name in self._controllers)
            raise UnknownTenant(f"no tenant {tenant!r}; this app's tenants: {names}") from None

    def retune(self, settings: ServiceSettings) -> None:
        """New settings for the next request (timeouts, breaker thresholds); the breakers keep their state."""
        self.settings = settings
        for calls in self._all_calls():
            calls.settings = settings
            calls.breaker.failures = settings.breaker_failures
            calls.breaker.cooldown_s = settings.breaker_cooldown_s

    def _all_calls(self) -> list[ExpertCalls]:
        return [tier.calls for tier in self.chain.tiers] if self.chain is not None else [self.expert_calls]

    @property
    def modality(self) -> Modality:
        return self.settings.modality

    def payload(self, samples: Sequence[Sample]) -> Payload:
        """The samples' texts or feature rows; :class:`InvalidSamples` (a 422 for this request) if they do not fit."""
        return payload_of(samples, self.modality, self.settings.n_features, self.settings.missing_values)

    async def detect(self, samples: Sequence[Sample], rationale: bool = False, deadline_ms: float | None = None,
                     trace_context: Any = None, tenant: str | None = None) -> DetectResponse:
        """Verdicts for ``samples``, in order; this request is its own batch."""
        started = time.perf_counter()
        payload = self.payload(samples)
        self.budget_of(tenant)
        (triage,) = await self.triage_batch([payload], [tenant])
        return await self.answer(samples, payload, raised(triage), rationale, started, deadline_ms, trace_context,
                                 tenant)

    async def triage_batch(self, payloads: list[Payload],
                           tenants: Sequence[str | None] | None = None) -> list[Triage | BaseException]:
        """Small tier, policy and budget once for several requests' samples, split back per request;
        each request's samples are decided by its tenant's budget (``tenants``, one per request).
        When the small tier fails on the batch, each request is scored alone, so a request it cannot
        score fails by itself (:class:`SmallTierUnavailable`: 503)."""
        tenants = list(tenants) if tenants is not None else [None] * len(payloads)
        started = time.perf_counter()
        try:
            payload = joined(payloads)  # rows of different widths cannot be joined: each request alone
            small = await self._small.score(payload)
        except Exception as exc:
            if len(payloads) == 1:
                return [SmallTierUnavailable(f"the small tier could not answer: {_describe(exc)}")]
            alone = await asyncio.gather(*(self.triage_batch([p], [t]) for p, t in zip(payloads, tenants)))
            return [outcome for (outcome,) in alone]
        small_ms = _ms_since(started)
        policy_started = time.perf_counter()
        scores = canonical(self._policy.score(small.features))  # the values the rule compares and verdicts report
        sizes = [len(p) for p in payloads]
        owner = np.repeat(np.array(tenants, dtype=object), sizes)
        thresholds = np.empty(len(scores))
        defer, forced, covered = (np.zeros(len(scores), dtype=bool) for _ in range(3))
        for tenant in dict.fromkeys(tenants):  # each tenant's samples, in arrival order, by its own budget
            rows = np.flatnonzero(owner == tenant) if len(set(tenants)) > 1 else np.arange(len(scores))
            controller = self.budget_of(tenant)
            thresholds[rows] = controller.threshold
            decisions = controller.triage(scores[rows], take(payload, rows) if len(rows) < len(scores) else payload)
            defer[rows], forced[rows], covered[rows] = decisions.defer, decisions.forced, decisions.covered
            self.metrics.record_batch(decisions.defer, decisions.forced, controller.state(),
                                      self._cost.small_per_call, tenant)
        self.metrics.latency.observe(small_ms, tags={"tier": "small", "tenant": _tag(None)})
        batch = Triage(small, scores, thresholds, defer, forced, covered, small_ms, _ms_since(policy_started), started)
        return list(batch.split(sizes))

    async def answer(self, samples: Sequence[Sample], payload: Payload, triage: Triage, rationale: bool = False,
                     started: float | None = None, deadline_ms: float | None = None,
                     trace_context: Any = None, tenant: str | None = None) -> DetectResponse:
        """The verdicts of one request from its triage: the expert asked for the deferred samples only.
        ``started`` (``time.perf_counter()`` when the request arrived) times the whole request and
        starts its deadline (``deadline_ms``, else ``serve.deadline_ms``; :mod:`deployments.deadline`);
        ``trace_context`` is the client's (its ``traceparent``), the parent of this request's span."""
        started = time.perf_counter() if started is None else started
        trace = RequestTrace(self.tracer, trace_context, started) if self.tracer is not None else None
        if trace is not None:
            trace.tiers(triage, self.settings.certificate_id)
        deadline = Deadline(started, deadline_ms if deadline_ms is not None else self.settings.deadline_ms)
        small_ms, scores, defer = triage.small_ms, triage.scores, triage.defer
        n = len(samples)
        answers = Answers.from_small(triage.small.probabilities, self._cost.small_per_call)
        answers.degraded[triage.forced] = True
        reasons = np.where(triage.forced, "forced", None).astype(object)
        deferred = np.flatnonzero(defer)
        expert_ms = 0.0
        if deferred.size:
            expert_started = time.perf_counter()
            span = trace.expert_span(deferred.size) if trace is not None else None
            token = carrying(trace.headers_of(span)) if trace is not None else None
            try:
                failed = await self._escalate(payload, deferred, answers, reasons, rationale, deadline, tenant)
            finally:
                if token is not None:
                    released(token)
            expert_ms = _ms_since(expert_started)
            if span is not None:
                span.set_attribute("cascade.degraded_reason", failed)
                span.end()
        certified = triage.covered.copy()
        if self.settings.budget_kind in ("accepted-error", "joint", "chain"):
            certified &= ~answers.degraded  # a small-tier answer to a deferred sample is no accepted answer
        label_index = answers.probabilities.argmax(axis=1)
        abstained = answers.source == "abstained"
        probability = np.clip(answers.probabilities[np.arange(n), label_index], 0.0, 1.0)
        total_ms = _ms_since(started)
        ids = [new_decision_id() for _ in range(n)] if self.decision_log is not None else [None] * n
        verdicts = [  # built from values computed here: no re-validation on the hot path
            Verdict.model_construct(
                id=samples[i].id, decision_id=ids[i], probability=float(probability[i]),
                label=None if abstained[i] else str(self._labels[label_index[i]]),
                source=answers.source[i], tier=answers.tier[i], deferral_score=float(scores[i]),
                threshold=float(triage.thresholds[i]), cost=float(answers.cost[i]),
                latency_ms={"small": small_ms, "policy": triage.policy_ms, **({"expert": expert_ms} if defer[i] else {}),
                            "total": total_ms},
                degraded=bool(answers.degraded[i]), degraded_reason=reasons[i], forced=bool(triage.forced[i]),
                certified=bool(certified[i]),
                prompt_tokens=int(answers.prompt_tokens[i]) if answers.tier[i] != "small" else None,
                completion_tokens=int(answers.completion_tokens[i]) if answers.tier[i] != "small" else None,
                rationale=answers.rationales[i],
            )
            for i in range(n)
        ]
        self.metrics.record_answers(answers.tier, answers.source,
                                    float(answers.cost.sum()) - self._cost.small_per_call * len(defer), total_ms, tenant)
        if self.decision_log is not None:
            self.decision_log.record(decision_rows(
                ids, payload, triage, answers, self._labels, certified, self.settings.certificate,  # type: ignore[arg-type]
                self.budget_of(tenant).state().get("certificate_id", self.settings.certificate_id), __version__,
                tenant))
        if not certified.all():
            self.metrics.uncertified.inc(int(n - np.count_nonzero(certified)), tags={"tenant": _tag(tenant)})
        if trace is not None:
            trace.end({"cascade.samples": n, "cascade.deferred": int(deferred.size),
                       "cascade.degraded": int(answers.degraded.sum()), "cascade.certified": int(certified.sum())})
        if abstained.any():
            await self._to_review(ids, samples, np.flatnonzero(abstained), tenant)
        answered_by = answers.answered_by(self.chain.names() if self.chain is not None else None)
        return DetectResponse.model_construct(verdicts=verdicts, answered_by=answered_by,
                                              degraded=int(answers.degraded.sum()))

    async def feedback(self, request: FeedbackRequest) -> FeedbackResponse:
        """Attach true labels to logged decisions (per item: ok, duplicate, conflict, unknown id, bad label)."""
        return await attach_feedback(self.decision_log, request.items, self.settings.label_names)

    async def review(self, limit: int = 50, tenant: str | None = None, after: float | None = None) -> ReviewResponse:
        """Abstained samples waiting for a label (:class:`cascade.review.ReviewQueue`)."""
        return await pending_review(self.review_queue, limit, tenant, after, self.settings.label_names)

    async def explain(self, request: ExplainRequest) -> ExplainResponse:
        """The expert's answer about one sample; degraded (no answer, the reason) if it fails."""
        started = time.perf_counter()
        sample = request.sample
        payload = sample.text if sample.text is not None else self._feature_row(sample.features or [])
        history = [turn.model_dump() for turn in request.history] or None
        label = request.verdict.label if request.verdict is not None else None
        try:
            explanation = await self.expert_calls.call(
                self._expert.aexplain(payload, question=request.question, history=history, label=label))
        except Exception as exc:  # any expert failure is an answer, never a 5xx
            reason = fallback_reason(exc)
            self.metrics.fallbacks.inc(tags={"reason": reason})
            return ExplainResponse(answer=None, degraded=True, error=f"expert {reason}: {_describe(exc)}",
                                   latency_ms=_ms_since(started))
        if explanation.cost > 0:
            self.metrics.cost.inc(float(explanation.cost), tags={"tier": "expert"})
        return ExplainResponse(answer=explanation.text, history=explanation.history, cost=explanation.cost,
                               prompt_tokens=explanation.prompt_tokens, completion_tokens=explanation.completion_tokens,
                               latency_ms=_ms_since(started))

    def _feature_row(self, features: list[float | None]) -> np.ndarray:
        try:
            return feature_rows([features], self.settings.n_features, self.settings.missing_values)[0]
        except InvalidSamples as exc:
            raise InvalidSamples([("sample.features", problem) for _, problem in exc.problems]) from None

    async def budget(self, tenant: str | None = None) -> BudgetState:
        """A tenant's budget now (the app's, without tenants), and which guarantee covers its threshold."""
        state = await self.budget_of(tenant).current()
        if "error" in state:
            raise UnknownTenant(state["error"])
        return budget_state(self.settings, state, tenant)

    async def set_budget(self, update: BudgetUpdate) -> BudgetState:
        """Check ``update``, then set the app's target (every router replica decides with it)."""
        controller = self.budget_of(update.tenant)
        hard_cap = controller.hard_cap
        if self.settings.served_rule == "certified":
            raise InvalidBudget("this app serves the certified rule as it is (budget.served_rule: certified); a "
                                "target does not move it")
        if hard_cap is not None and update.target > hard_cap:
            raise InvalidBudget(f"target {update.target} is above the configured hard cap {hard_cap}")
        try:
            await controller.set_target(update.target)
        except ValueError as exc:
            raise InvalidBudget(str(exc)) from exc
        return await self.budget(update.tenant)

    async def readiness(self) -> Readiness:
        """Each tier's state and the breaker's (:meth:`ExpertCalls.readiness`); with more tiers, the worst of
        them, and each one's in ``tiers``."""
        if self.chain is None:
            return await self.expert_calls.readiness(self._small.ready)
        states = await asyncio.gather(*(tier.calls.readiness(self._small.ready) for tier in self.chain.tiers))
        return worst_readiness(dict(zip(self.chain.rule.tiers, states)))

    def health(self) -> Health:
        return Health(name=self.settings.name, modality=self.modality, labels=list(self.settings.label_names),
                      expert=self.settings.expert_name,
                      max_samples_per_request=self.settings.max_samples_per_request)

    async def _escalate(self, payload: Payload, deferred: np.ndarray, answers: Answers, reasons: np.ndarray,
                        rationale: bool, deadline: Deadline, tenant: str | None) -> str:
        """The deferred samples' answers from the tier(s) after the small one; '' or why the last hop asked failed."""
        if self.chain is not None:
            reports = await self.chain.escalate(payload, deferred, answers, reasons, deadline)
            for report in reports:
                tags = {"tier": report.tier, "tenant": _tag(tenant)}
                if report.failed:
                    self.metrics.fallbacks.inc(report.asked, tags={"reason": report.failed, "tenant": _tag(tenant)})
                else:
                    self.metrics.latency.observe(report.ms, tags=tags)
            if rationale:
                for tier in self.chain.tiers:
                    answered = deferred[answers.tier[deferred] == tier.name]
                    await self._rationales(payload, answered, answers, tier.expert, tier.calls)
            return reports[-1].failed if reports else ""
        started = time.perf_counter()
        try:
            result = await self.expert_calls.call(self._expert.ajudge(take(payload, deferred)), deadline)
            if tuple(result.label_names) != self.settings.label_names:
                raise ValueError(f"expert labels {result.label_names} differ from {self.settings.label_names}")
        except Exception as exc:  # any expert failure degrades the answer, never a 5xx
            reason = fallback_reason(exc)
            answers.degraded[deferred] = True
            reasons[deferred] = reason
            self.metrics.fallbacks.inc(deferred.size, tags={"reason": reason, "tenant": _tag(tenant)})
            return reason
        expert_ms = _ms_since(started)
        self.metrics.latency.observe(expert_ms, tags={"tier": "expert", "tenant": _tag(tenant)})
        self.expert_calls.latency.observe(expert_ms)
        answers.take_expert(deferred, result)
        if rationale:
            await self._rationales(payload, deferred, answers, self._expert, self.expert_calls)
        return ""

    async def _rationales(self, payload: Payload, index: np.ndarray, answers: "Answers", expert: ExpertTier,
                          calls: ExpertCalls) -> None:
        """Ask ``expert`` for each answered sample's rationale concurrently; a failed one is left empty."""
        labels = self._labels[answers.probabilities[index].argmax(axis=1)]

        async def one(position: int) -> Any:
            return await calls.call(expert.aexplain(payload[index[position]], label=str(labels[position])))

        outcomes = await asyncio.gather(*(one(p) for p in range(len(index))), return_exceptions=True)
        for position, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                self.metrics.fallbacks.inc(tags={"reason": "rationale"})
                continue
            answers.take_rationale(int(index[position]), outcome)

    async def _to_review(self, ids: list[str | None], samples: Sequence[Sample], index: np.ndarray,
                         tenant: str | None) -> None:
        """Keep the abstained samples for reviewers (in a worker thread; nothing to keep without a decision log)."""
        if self.review_queue is None:
            return
        now = time.time()
        items = [ReviewItem(str(ids[i]), now, tenant, samples[i].model_dump(exclude_none=True)) for i in index]
        await asyncio.to_thread(self.review_queue.add, items)


def raised(outcome: Triage | BaseException) -> Triage:
    """A request's triage, or the error that failed its samples, raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _describe(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
