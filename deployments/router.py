"""``CascadeRouter``: the FastAPI ingress that asks the detector, applies policy + controller, and
awaits the expert only for deferred samples (see :mod:`deployments.service`, :mod:`deployments.http`).

Each router replica holds its own online controller, so each keeps its realised deferral rate at
the target (and so does the traffic as a whole); ``PUT /v1/budget`` is broadcast to every replica.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from cascade.config import CascadeConfig
from deployments.artifact import ServedPolicy
from deployments.control import ControlAccess
from deployments.expert import ExpertHandle
from deployments.http import build_http_app
from deployments.schemas import BudgetUpdate
from deployments.service import CascadeService, Payload, ServiceSettings, SmallScores


@serve.deployment
@serve.ingress()
class CascadeRouter:
    """The HTTP entry point of the cascade app."""

    def __init__(self, config: CascadeConfig, served: ServedPolicy, access: ControlAccess,
                 detector: DeploymentHandle, expert: DeploymentHandle) -> None:
        self._config = config
        self._access = access
        self._detector = detector
        self._chunk = config.serve.max_batch_size
        self._expert = ExpertHandle(expert)
        self._service = CascadeService(
            ServiceSettings.from_config(config, served), small=self._small, expert=self._expert,
            policy=served.policy, controller=served.controller(config), cost=config.cost,
            publish_budget=self._broadcast_budget, small_probe=self._small_ready, expert_probe=self._expert.status,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self._service, self._config.serve, self._access)

    async def apply_budget(self, update: BudgetUpdate) -> None:
        """Set this replica's controller target (called on every replica by ``PUT /v1/budget``)."""
        self._service.apply_budget(update)

    async def _broadcast_budget(self, update: BudgetUpdate) -> None:
        context = serve.get_replica_context()
        handle = serve.get_deployment_handle(context.deployment, context.app_name)
        await handle.broadcast("apply_budget", update).results_async()

    async def _small_ready(self) -> bool:
        return bool(await self._detector.ready.remote())

    async def _small(self, payload: Payload) -> SmallScores:
        """Ask the detector, in chunks of at most ``max_batch_size`` samples (its batch unit)."""
        chunks = [payload[start:start + self._chunk] for start in range(0, len(payload), self._chunk)]
        parts: list[Any] = await asyncio.gather(*(self._detector.predict.remote(chunk) for chunk in chunks))
        return SmallScores(probabilities=np.concatenate([p.probabilities for p in parts]),
                           features=np.concatenate([p.features for p in parts]))
