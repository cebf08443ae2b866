"""``CascadeRouter``: the FastAPI ingress that asks the detector, applies policy + budget, and
awaits the expert only for deferred samples (see :mod:`deployments.service`, :mod:`deployments.http`).

The budget belongs to the app: each router replica decides its batches with deferral allowance
leased from the one :class:`~deployments.holder.BudgetHolder` and reports back after each batch,
off the request path (:mod:`policies.leases`). ``GET``/``PUT /v1/budget`` go to the holder.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from cascade.config import CascadeConfig
from deployments.answers import Payload, SmallScores
from deployments.artifact import ServedPolicy
from deployments.budgets import SharedBudget
from deployments.control import ControlAccess
from deployments.expert import ExpertHandle
from deployments.http import build_http_app
from deployments.service import CascadeService, ServiceSettings
from policies.leases import Lease, LeasedBudget, Report


@serve.deployment
@serve.ingress()
class CascadeRouter:
    """The HTTP entry point of the cascade app."""

    def __init__(self, config: CascadeConfig, served: ServedPolicy, access: ControlAccess,
                 detector: DeploymentHandle, expert: DeploymentHandle, holder: DeploymentHandle) -> None:
        self._config = config
        self._access = access
        self._detector = detector
        self._holder = holder
        self._chunk = config.serve.max_batch_size
        self._expert = ExpertHandle(expert)
        leased = LeasedBudget(serve.get_replica_context().replica_tag, self._exchange, threshold=served.threshold,
                              hard_cap=config.budget.hard_cap, ttl_s=config.serve.shared_budget.lease_ttl_s)
        self._service = CascadeService(
            ServiceSettings.from_config(config, served), small=self._small, expert=self._expert,
            policy=served.policy, controller=SharedBudget(leased, read=self._read_budget, change=self._change_budget),
            cost=config.cost, small_probe=self._small_ready, expert_probe=self._expert.status,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self._service, self._config.serve, self._access)

    async def _exchange(self, report: Report) -> Lease:
        return await self._holder.exchange.remote(report)

    async def _read_budget(self) -> dict[str, Any]:
        return await self._holder.state.remote()

    async def _change_budget(self, target: float) -> dict[str, Any]:
        return await self._holder.set_target.remote(target)

    async def _small_ready(self) -> bool:
        return bool(await self._detector.ready.remote())

    async def _small(self, payload: Payload) -> SmallScores:
        """Ask the detector, in chunks of at most ``max_batch_size`` samples (its batch unit)."""
        chunks = [payload[start:start + self._chunk] for start in range(0, len(payload), self._chunk)]
        parts: list[Any] = await asyncio.gather(*(self._detector.predict.remote(chunk) for chunk in chunks))
        return SmallScores(probabilities=np.concatenate([p.probabilities for p in parts]),
                           features=np.concatenate([p.features for p in parts]))
