"""``CascadeRouter``: the FastAPI ingress that runs the small tier, policy + budget once per batch of
requests, and awaits the expert only for deferred samples (see :mod:`deployments.service`,
:mod:`deployments.http`).

Requests are batched at the router (``@serve.batch``, up to ``serve.max_batch_size`` samples or
``serve.router_batch_wait_timeout_s``). A cheap small tier (TF-IDF, IsolationForest, pixel LR)
scores each batch in this replica, off the event loop; a heavy one is asked through the
``SmallDetector`` deployment (``serve.small_tier``). The budget belongs to the app: each replica
decides with deferral allowance leased from the one :class:`~deployments.holder.BudgetHolder` and
reports back after each batch, off the request path (:mod:`policies.leases`). ``GET``/``PUT
/v1/budget`` go to the holder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from cascade.config import CascadeConfig
from deployments.answers import Payload, SmallScores, Triage, samples_in
from deployments.artifact import ServedPolicy
from deployments.budgets import SharedBudget
from deployments.control import ControlAccess
from deployments.detector import score_small
from deployments.expert import ExpertHandle
from deployments.http import build_http_app
from deployments.knobs import ROUTER_KNOBS, with_knobs
from deployments.contracts import ServiceSettings
from deployments.service import CascadeService
from policies.leases import Lease, LeasedBudget, Report


@serve.deployment
@serve.ingress()
class CascadeRouter:
    """The HTTP entry point of the cascade app; ``detector`` is ``None`` when the small tier runs here."""

    async def __init__(self, config: CascadeConfig, served: ServedPolicy, access: ControlAccess,
                       detector: DeploymentHandle | None, expert: DeploymentHandle, holder: DeploymentHandle) -> None:
        from cascade.small import SmallTier

        self._config = config
        self._served = served
        self._access = access
        self._detector = detector
        self._small_tier = SmallTier.load(Path(served.small_dir)) if detector is None else None
        self._holder = holder
        self._expert = ExpertHandle(expert)
        self._set_batching(config)
        leased = LeasedBudget(serve.get_replica_context().replica_tag, self._exchange, threshold=served.threshold,
                              hard_cap=config.budget.hard_cap, ttl_s=config.serve.shared_budget.lease_ttl_s)
        self._service = CascadeService(
            ServiceSettings.from_config(config, served), small=self._small, expert=self._expert,
            policy=served.policy, controller=SharedBudget(leased, read=self._read_budget, change=self._change_budget),
            cost=config.cost, small_probe=None if detector is None else self._small_ready,
            expert_probe=self._expert.status, triage=self._triage,
        )
        await leased.start()  # the first lease before the first request: a new replica can defer at once

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's ``user_config``: the router's runtime knobs (:mod:`deployments.knobs`), checked by the
        config's own models; applied to the next batch and the next expert call."""
        config = with_knobs(self._config, user_config, ROUTER_KNOBS)  # knobs left out: as the config sets them
        self._set_batching(config)
        self._service.retune(ServiceSettings.from_config(config, self._served))

    def _set_batching(self, config: CascadeConfig) -> None:
        self._chunk = config.serve.max_batch_size
        self._triage_batch.set_max_batch_size(config.serve.max_batch_size)
        self._triage_batch.set_batch_wait_timeout_s(config.serve.router_batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self._service, self._config.serve, self._access)

    async def _triage(self, payload: Payload) -> Triage:
        """This request's share of the batches it joins (cut in chunks of at most ``max_batch_size``);
        raises what failed its own samples only."""
        chunks = [payload[start:start + self._chunk] for start in range(0, len(payload), self._chunk)]
        parts = await asyncio.gather(*(self._triage_batch(chunk) for chunk in chunks))
        for part in parts:
            if isinstance(part, BaseException):
                raise part
        return Triage.join(parts)

    @serve.batch(batch_size_fn=samples_in)
    async def _triage_batch(self, payloads: list[Payload]) -> list[Triage | BaseException]:
        """Small tier, policy and budget once for every waiting request; one triage (or error) per request."""
        return await self._service.triage_batch(payloads)

    async def _small(self, payload: Payload) -> SmallScores:
        """The small tier's answer: scored here, or by the detector deployment in its batch-sized chunks."""
        if self._detector is None:
            return await asyncio.to_thread(score_small, self._small_tier, payload)
        chunks = [payload[start:start + self._chunk] for start in range(0, len(payload), self._chunk)]
        parts: list[Any] = await asyncio.gather(*(self._detector.predict.remote(chunk) for chunk in chunks))
        return SmallScores(probabilities=np.concatenate([p.probabilities for p in parts]),
                           features=np.concatenate([p.features for p in parts]))

    async def _exchange(self, report: Report) -> Lease:
        return await self._holder.exchange.remote(report)

    async def _read_budget(self) -> dict[str, Any]:
        return await self._holder.state.remote()

    async def _change_budget(self, target: float) -> dict[str, Any]:
        return await self._holder.set_target.remote(target)

    async def _small_ready(self) -> bool:
        """The detector deployment answers (only asked when there is one)."""
        return bool(await self._detector.ready.remote())  # type: ignore[union-attr]
