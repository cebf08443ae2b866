"""``CascadeRouter``: the FastAPI ingress of the cascade app (:mod:`deployments.http`).

A detect request goes, in this file, top to bottom: :meth:`CascadeRouter.detect` validates the
samples, cuts them in chunks of at most ``serve.max_batch_size``, hands each chunk to the
``@serve.batch`` method :meth:`CascadeRouter.triage_batch`, which runs the service's small tier,
policy and budget once for every request waiting (``serve.router_batch_wait_timeout_s``); then
:meth:`~deployments.service.CascadeService.answer` asks the expert for the deferred samples only.

A cheap small tier (TF-IDF, IsolationForest, pixel LR) scores in this replica, off the event loop; a
heavy one is asked through the ``SmallDetector`` deployment (``serve.small_tier``). The budget
belongs to the app: each replica decides with deferral allowance leased from the one
:class:`~deployments.holder.BudgetHolder` and reports back after each batch, off the request path
(:mod:`policies.leases`). ``GET``/``PUT /v1/budget`` go to the holder.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from cascade.config import CascadeConfig, served_tiers
from cascade.decision_setup import open_decision_log
from cascade.types import Sample
from deployments.answers import Triage
from deployments.payloads import Payload, samples_in
from deployments.served import ServedPolicy, tenant_config
from deployments.budgets import SharedBudget
from deployments.contracts import ServiceSettings
from deployments.control import ControlAccess, TenantAccess
from deployments.detector import DetectorClient, LocalSmallTier
from deployments.chain import ChainTier, ServedChain
from deployments.expert import ExpertHandle
from deployments.expert_calls import ExpertCalls
from deployments.http import build_http_app
from deployments.knobs import ROUTER_KNOBS, with_knobs
from deployments.metrics import CascadeMetrics
from deployments.schemas import (BudgetState, BudgetUpdate, DetectResponse, ExplainRequest, ExplainResponse,
                                 FeedbackRequest, FeedbackResponse, Health, Modality, Readiness, ReviewResponse)
from deployments.service import CascadeService, raised
from deployments.tracing import shutdown, tracer_for
from policies.leases import Lease, LeasedBudget, Report


@serve.deployment
@serve.ingress()
class CascadeRouter:
    """The HTTP entry point of the cascade app; ``detector`` is ``None`` when the small tier runs here."""

    async def __init__(self, config: CascadeConfig, served: ServedPolicy, access: ControlAccess,
                       feedback_access: ControlAccess, tenants: TenantAccess, detector: DeploymentHandle | None,
                       expert: DeploymentHandle | dict[str, DeploymentHandle], holder: DeploymentHandle) -> None:
        from cascade.small import SmallTier

        self._config = config
        self._served = served
        self._access = access
        self._feedback_access = feedback_access
        self._tenants = tenants
        self._holder = holder
        settings = ServiceSettings.from_config(config, served)
        chain = served_chain(config, served, expert, settings) if isinstance(expert, dict) else None
        expert_client = chain.last.expert if chain is not None else ExpertHandle(expert)
        small = (LocalSmallTier(SmallTier.load(Path(served.small_dir))) if detector is None
                 else DetectorClient(detector, config.serve.max_batch_size))
        self._set_batching(config)
        replica = serve.get_replica_context().replica_tag
        leases = {name: LeasedBudget(replica, self._exchange, threshold=served.threshold,
                                     hard_cap=tenant_config(config, name).budget.hard_cap,
                                     ttl_s=config.serve.shared_budget.lease_ttl_s, tenant=name)
                  for name in [t.name for t in config.serve.tenants] or [None]}
        budgets = {name: SharedBudget(leased, read=functools.partial(self._read_budget, name),
                                      change=functools.partial(self._change_budget, name))
                   for name, leased in leases.items()}
        self._service = CascadeService(
            settings, small=small, expert=expert_client, policy=served.policy,
            controller=budgets, cost=config.cost, chain=chain,
            expert_probe=expert_client.status,
            decision_log=open_decision_log(config) if config.serve.decision_log.enabled else None,
            tracer=tracer_for(config.serve.tracing),
        )
        for leased in leases.values():
            await leased.start()  # the first lease before the first request: a new replica can defer at once

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's ``user_config``: the router's runtime knobs (:mod:`deployments.knobs`), checked by the
        config's own models; applied to the next batch and the next expert call."""
        config = with_knobs(self._config, user_config, ROUTER_KNOBS)  # knobs left out: as the config sets them
        self._set_batching(config)
        self._service.retune(ServiceSettings.from_config(config, self._served))

    def _set_batching(self, config: CascadeConfig) -> None:
        self._chunk = config.serve.max_batch_size
        self.triage_batch.set_max_batch_size(config.serve.max_batch_size)
        self.triage_batch.set_batch_wait_timeout_s(config.serve.router_batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self, self._config.serve, self._access, self._feedback_access, self._tenants)

    async def detect(self, samples: Sequence[Sample], rationale: bool = False, deadline_ms: float | None = None,
                     trace_context: Any = None, tenant: str | None = None) -> DetectResponse:
        """Verdicts for ``samples``, in order: validate, triage in the batches the chunks join, answer."""
        started = time.perf_counter()
        payload = self._service.payload(samples)  # InvalidSamples: 422, this request only
        self._service.budget_of(tenant)
        chunks = [payload[start:start + self._chunk] for start in range(0, len(payload), self._chunk)]
        parts = await asyncio.gather(*(self.triage_batch((chunk, tenant)) for chunk in chunks))
        triage = Triage.join([raised(part) for part in parts])
        return await self._service.answer(samples, payload, triage, rationale, started, deadline_ms, trace_context,
                                          tenant)

    @serve.batch(batch_size_fn=lambda items: samples_in([payload for payload, _ in items]))
    async def triage_batch(self, items: list[tuple[Payload, str | None]]) -> list[Triage | BaseException]:
        """Small tier, policy and budget once for every waiting request (each by its tenant's budget); one
        triage (or error) per request."""
        return await self._service.triage_batch([payload for payload, _ in items], [tenant for _, tenant in items])

    # The other routes are the service's own.

    @property
    def modality(self) -> Modality:
        return self._service.modality

    @property
    def metrics(self) -> CascadeMetrics:
        return self._service.metrics

    @property
    def tracer(self) -> Any:
        return self._service.tracer

    async def explain(self, request: ExplainRequest) -> ExplainResponse:
        return await self._service.explain(request)

    async def budget(self, tenant: str | None = None) -> BudgetState:
        return await self._service.budget(tenant)

    async def set_budget(self, update: BudgetUpdate) -> BudgetState:
        return await self._service.set_budget(update)

    async def feedback(self, request: FeedbackRequest) -> FeedbackResponse:
        return await self._service.feedback(request)

    async def review(self, limit: int, tenant: str | None, after: float | None) -> ReviewResponse:
        return await self._service.review(limit, tenant, after)

    def __del__(self) -> None:
        service = getattr(self, "_service", None)
        if service is not None and service.decision_log is not None:
            service.decision_log.close()  # what waits in the queue is written before the replica goes
        if service is not None and service.tracer is not None:
            shutdown(service.tracer)  # and the spans waiting for the exporter

    def health(self) -> Health:
        return self._service.health()

    async def readiness(self) -> Readiness:
        return await self._service.readiness()

    async def _exchange(self, report: Report) -> Lease:
        return await self._holder.exchange.remote(report)

    async def _read_budget(self, tenant: str | None) -> dict[str, Any]:
        return await self._holder.state.remote(tenant)

    async def _change_budget(self, tenant: str | None, target: float) -> dict[str, Any]:
        return await self._holder.set_target.remote(target, tenant)


def served_chain(config: CascadeConfig, served: ServedPolicy, experts: dict[str, DeploymentHandle],
                 settings: ServiceSettings) -> ServedChain:
    """The chain's tiers as this replica calls them: each tier's deployment, breaker, readiness probe and prices."""
    prices = {tier.name: tier for tier in served_tiers(config)}
    tiers = []
    for name in served.chain.tiers:
        client = ExpertHandle(experts[name])
        tiers.append(ChainTier(name, client, ExpertCalls(settings, client.status), prices[name]))
    return ServedChain(served.chain, tiers, served.label_names)
