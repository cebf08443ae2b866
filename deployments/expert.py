"""``ExpertServer``: the expert tier's deployment, one expert per replica, as ``config.expert`` says
(an LLM, the CNN or the knn-vote control expert).

``kind: vllm`` runs an in-process vLLM ``AsyncLLM`` engine in the replica (its CPU settings arrive
through the replica's ``runtime_env``); ``kind: openai`` is a client for an external
OpenAI-compatible server (e.g. ``python -m vllm.entrypoints.openai.api_server``). An in-process
engine is started in the constructor (and a local model, the vote's MiniLM or the CNN, judges the
probe sample there), so a replica only takes traffic once its model is up; an external server is
not contacted until the first deferral, so the app starts (and answers
degraded) while that server is down.

The expert's label probabilities pass through the calibrator ``cascade tune`` saved in the artifact
(``expert.calibration``; :mod:`cascade.experts.calibrated`), as they did in the harness.

Health: Serve calls ``check_health`` every ``serve.expert_health_check_period_s``; it judges one
probe sample. An in-process engine that fails it makes the replica unhealthy, so Serve replaces it;
an external server that fails it is only reported (``status``), since a new replica would not help.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from cascade.config import CascadeConfig
from cascade.data import Dataset
from cascade.data.roles import labelled_pool, load_roles
from cascade.experts.errors import ExpertUnavailable
from cascade.trace_context import carried, carrying, released
from deployments.contracts import ExpertOverloaded
from deployments.deadline import expert_deadline
from deployments.expert_work import ExpertWork
from deployments.payloads import Payload
from deployments.served import expert_calibrator, served_modality, tier_view

IN_PROCESS_KINDS = ("vllm", "transformers")
WARM_UP = ["cascade warm-up: is this message ordinary?"]
"""what a local text expert judges before taking traffic: a text no embedding cache holds, so MiniLM loads"""
CANCELLABLE_KINDS = ("vllm", "openai")
"""kinds whose calls stop when their caller leaves (an engine request, an HTTP call); the others compute in a
worker thread that runs to its end"""
PROBE_TIMEOUT_S = 20.0  # under Serve's 30 s health-check timeout, so a slow probe is a failed probe, not a hang


def expert_env(config: CascadeConfig) -> dict[str, str]:
    """Environment variables the expert replica needs (vLLM's CPU KV cache, all cores usable)."""
    from cascade.experts import vllm_env

    return vllm_env(config.expert.kv_cache_gib) if config.expert.kind == "vllm" else {}


def expert_slots(config: CascadeConfig) -> int:
    """Calls one expert replica computes at once: ``serve.expert_concurrency``, else twice
    ``expert.max_num_seqs`` for an engine (it batches them) and this machine's core count for an expert
    computing in a thread (Ray runs a replica's torch on one thread per call, so one call per core keeps
    the cores busy; more only makes every call slower). Called in the replica, so it counts the cores of
    the node the replica runs on.

    >>> import os
    >>> from cascade.config import CascadeConfig
    >>> expert_slots(CascadeConfig.model_validate({"dataset": {"name": "spamassassin"},
    ...                                            "expert": {"kind": "knn-vote", "shots": 4}})) == os.cpu_count()
    True
    """
    if config.serve.expert_concurrency is not None:
        return config.serve.expert_concurrency
    return 2 * config.expert.max_num_seqs if config.expert.kind in CANCELLABLE_KINDS else max(1, os.cpu_count() or 1)


def training_pool(config: CascadeConfig) -> Dataset | None:
    """The labelled training samples retrieved examples come from (the setting's label budget), when the
    expert uses any: the same pool as in the harness and ``cascade tune``."""
    expert = config.expert
    if expert.shots == 0 and expert.kind != "knn-vote":
        return None
    return labelled_pool(config, load_roles(config).train)


def probe_input(config: CascadeConfig, pool: Dataset | None) -> Payload | None:
    """One sample to test the expert with: a training sample when there is a pool, else a short text
    (text cascades); ``None`` for a feature cascade without a pool (then only start-up is checked)."""
    if pool is not None:
        return pool.X[:1]
    return ["Is this message ordinary?"] if served_modality(config) == "text" else None


@serve.deployment
class ExpertServer:
    """Judges deferred samples (label probabilities from the label tokens) and explains verdicts; ``tier``: the
    chain tier this replica serves (its expert, prices and calibrator; None: the config's ``expert``)."""

    async def __init__(self, config: CascadeConfig, tier: str | None = None) -> None:
        from cascade.experts import make_expert
        from cascade.experts.calibrated import CalibratedExpert

        calibrator = expert_calibrator(config, tier)  # fitted by `cascade tune` on the pool judged leave-one-out
        config = tier_view(config, tier)  # a chain's tier: its expert and its prices
        pool = training_pool(config)
        expert = make_expert(config.expert, cost=config.cost, pool=pool)
        self._expert = expert if calibrator is None else CalibratedExpert(expert, calibrator)
        self._in_process = config.expert.kind in IN_PROCESS_KINDS
        self._probe = probe_input(config, pool)
        self._work = ExpertWork(expert_slots(config), cancellable=config.expert.kind in CANCELLABLE_KINDS)
        self._up: bool | None = None  # an external server: unknown until probed
        if self._in_process:
            await self._expert.astart()
            self._up = True
        elif config.expert.kind != "openai":  # load the model (MiniLM, the CNN) before taking traffic: the first
            warm_up = WARM_UP if served_modality(config) == "text" else self._probe  # calls must not each wait
            if warm_up is not None:                                                  # for it, nor teach the
                await self._expert.ajudge(warm_up)                                   # replica it is slow

    async def check_health(self) -> None:
        """Judge the probe sample; an in-process engine that cannot is unhealthy (Serve replaces it)."""
        problem = await self._probe_once()
        if problem and self._in_process:
            raise RuntimeError(f"the expert engine failed its health probe: {problem}")

    async def status(self) -> bool:
        """Whether the expert answered its last probe (probing now if it never was)."""
        if self._up is None:
            await self._probe_once()
        return bool(self._up)

    async def ajudge(self, X: Payload, trace: dict[str, str] | None = None, deadline_at: float | None = None) -> Any:
        """An ``ExpertResult`` for ``X``: probabilities, tokens, cost and latency per sample; ``trace``:
        the router's ``traceparent`` headers, carried by an HTTP engine's requests; ``deadline_at``: the
        request's deadline (wall-clock seconds), past which the call is dropped unstarted
        (:class:`~deployments.expert_work.ExpertWork`)."""
        token = carrying(trace)
        try:
            return await self._work.run(lambda: self._expert.ajudge(X), deadline_at)
        finally:
            released(token)

    async def work_state(self) -> dict[str, Any]:
        """This replica's slots, calls computing now, calls dropped unstarted, typical call (ms)."""
        return self._work.state()

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Any:
        """An ``Explanation``: a short rationale for ``sample`` (labelled ``label``), or a follow-up answer."""
        return await self._expert.aexplain(sample, question=question, history=history, label=label)

    async def _probe_once(self) -> str:
        """Judge the probe sample; record and return what went wrong ('' when it answered)."""
        if self._probe is None:
            return ""
        try:
            await asyncio.wait_for(self._expert.ajudge(self._probe), PROBE_TIMEOUT_S)
        except Exception as exc:
            self._up = False
            return f"{type(exc).__name__}: {exc}"[:300]
        self._up = True
        return ""

    def __del__(self) -> None:
        expert = getattr(self, "_expert", None)  # absent when the constructor failed
        if expert is not None:
            expert.close()


class ExpertHandle:
    """The router's view of the ``ExpertServer`` deployment, with the expert's own method names.

    A judge call carries the request's deadline (:func:`~deployments.deadline.expert_deadline`). A caller
    that gives up (a timeout) cancels the request at the replica too; a full queue at the
    expert is :class:`~deployments.contracts.ExpertOverloaded`; a replica that died with the call (or
    a deployment with none) is :class:`~cascade.experts.errors.ExpertUnavailable`, which opens the
    router's breaker at once.
    """

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def ajudge(self, X: Payload) -> Any:
        return await _cancel_on_exit(self._handle.ajudge.remote(X, carried() or None, expert_deadline()))

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Any:
        return await _cancel_on_exit(self._handle.aexplain.remote(sample, question, history, label))

    async def status(self) -> bool:
        """The replica's last probe result; raises while no replica can take the call."""
        return bool(await _cancel_on_exit(self._handle.status.remote()))


async def _cancel_on_exit(response: Any) -> Any:
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise
    except BackPressureError as exc:
        raise ExpertOverloaded(str(exc)) from exc
    except (RayActorError, DeploymentUnavailableError) as exc:
        raise ExpertUnavailable(f"the expert replica is gone ({type(exc).__name__})") from exc
