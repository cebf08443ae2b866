"""``LLMExpert``: one expert per replica, as ``config.expert`` says.

``kind: vllm`` runs an in-process vLLM ``AsyncLLM`` engine in the replica (its CPU settings arrive
through the replica's ``runtime_env``); ``kind: openai`` is a client for an external
OpenAI-compatible server (e.g. ``python -m vllm.entrypoints.openai.api_server``). An in-process
engine is started in the constructor, so a replica only takes traffic once its engine is up; an
external server is not contacted until the first deferral, so the app starts (and answers
degraded) while that server is down.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from cascade.config import CascadeConfig
from cascade.data import Dataset
from cascade.data.roles import load_roles
from deployments.service import Payload

IN_PROCESS_KINDS = ("vllm", "transformers")


def expert_env(config: CascadeConfig) -> dict[str, str]:
    """Environment variables the expert replica needs (vLLM's CPU KV cache, all cores usable)."""
    from cascade.experts import vllm_env

    return vllm_env(config.expert.kv_cache_gib) if config.expert.kind == "vllm" else {}


def training_pool(config: CascadeConfig) -> Dataset | None:
    """The labelled training split retrieved examples come from, when the expert uses any."""
    expert = config.expert
    if expert.shots == 0 and expert.kind != "knn-vote":
        return None
    return load_roles(config).train


@serve.deployment
class LLMExpert:
    """Judges deferred samples (label probabilities from the label tokens) and explains verdicts."""

    async def __init__(self, config: CascadeConfig) -> None:
        from cascade.experts import make_expert

        self._expert = make_expert(config.expert, cost=config.cost, pool=training_pool(config))
        if config.expert.kind in IN_PROCESS_KINDS:
            await self._expert.astart()

    async def ajudge(self, X: Payload) -> Any:
        """An ``ExpertResult`` for ``X``: probabilities, tokens, cost and latency per sample."""
        return await self._expert.ajudge(X)

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Any:
        """An ``Explanation``: a short rationale for ``sample`` (labelled ``label``), or a follow-up answer."""
        return await self._expert.aexplain(sample, question=question, history=history, label=label)

    def __del__(self) -> None:
        expert = getattr(self, "_expert", None)  # absent when the constructor failed
        if expert is not None:
            expert.close()


class ExpertHandle:
    """The router's view of the ``LLMExpert`` deployment, with the expert's own method names.

    A caller that gives up (a timeout) cancels the request at the replica too.
    """

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def ajudge(self, X: Payload) -> Any:
        return await _cancel_on_exit(self._handle.ajudge.remote(X))

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Any:
        return await _cancel_on_exit(self._handle.aexplain.remote(sample, question, history, label))


async def _cancel_on_exit(response: Any) -> Any:
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise
