"""The serving benchmark's reference paths and loads (:mod:`experiments.benchmarks.bench_serve`).

* :func:`deploy_bare_detector`: the fitted small tier alone behind the router's own ingress (same
  FastAPI request model, same ASGI guard, same ``@serve.batch`` settings, same verdict body, same
  ``/v1/detect`` path shape), so the router's extra cost (policy, budget, service bookkeeping) is
  all that differs;
* :func:`deploy_http_floor`: a no-op ingress (Serve's proxy and one replica, nothing else);
* :func:`open_loop`: requests sent at a fixed offered rate whatever the answers do (latency is
  measured from each request's scheduled send time, so queueing in the client counts);
* :func:`verdict_timings`: the router's own per-batch timings read from the verdicts.
"""

# No `from __future__ import annotations`: FastAPI must see the bare ingress's request model, local to
# deploy_bare_detector, as a real annotation object.

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from cascade.config import CascadeConfig
from experiments.benchmarks.load_test import check_loopback

BARE_APP, FLOOR_APP = "bare-detector", "http-floor"


def deploy_bare_detector(config: CascadeConfig, route_prefix: str = "/bare") -> None:
    """The small tier alone behind the cascade's ingress, at ``route_prefix`` + ``/v1/detect``."""
    from fastapi import FastAPI, Response
    from ray import serve

    from cascade.types import Verdict
    from deployments.payloads import Payload, joined, payload_of, samples_in
    from deployments.served import load_served
    from deployments.control import ControlAccess
    from deployments.detector import score_payload
    from deployments.guard import RequestGuard
    from deployments.http import TIER_HEADER
    from deployments.metrics import CascadeMetrics
    from deployments.schemas import DetectResponse, max_body_bytes, request_models

    served = load_served(config)
    limits = config.serve
    models = request_models(limits, served.modality)
    labels = np.asarray(served.label_names)
    cost = config.cost.small_per_call

    class BareDetector:
        def __init__(self) -> None:
            from cascade.small import SmallTier

            self._small = SmallTier.load(served.small_dir)
            self._score.set_max_batch_size(limits.max_batch_size)
            self._score.set_batch_wait_timeout_s(limits.router_batch_wait_timeout_s)

        def __serve_build_asgi_app__(self) -> FastAPI:
            app = FastAPI()
            app.add_middleware(RequestGuard, body_limit=max_body_bytes(limits), access=ControlAccess.from_token(None),
                               metrics=CascadeMetrics(), routes=("/v1/detect",))

            @app.post("/v1/detect")
            async def detect(body: models.detect) -> Response:  # type: ignore[valid-type]
                started = time.perf_counter()
                probabilities = await self._score(payload_of(body.samples, served.modality, served.n_features))
                label_index = probabilities.argmax(axis=1)
                total_ms = (time.perf_counter() - started) * 1000.0
                top = probabilities[np.arange(len(label_index)), label_index]
                verdicts = [Verdict.model_construct(  # the router's verdict fields; this path never defers
                    id=sample.id, label=str(labels[label_index[i]]), probability=float(top[i]), source="small",
                    deferral_score=float(1.0 - top[i]), threshold=1.0, cost=cost, latency_ms={"total": total_ms},
                    degraded=False, forced=False, certified=False, prompt_tokens=None, completion_tokens=None,
                    rationale=None)
                    for i, sample in enumerate(body.samples)]
                result = DetectResponse.model_construct(verdicts=verdicts, answered_by={"small": len(verdicts)},
                                                        degraded=0)
                return Response(result.model_dump_json(), media_type="application/json", headers={TIER_HEADER: "small"})

            return app

        @serve.batch(batch_size_fn=samples_in)
        async def _score(self, payloads: list[Payload]) -> list[np.ndarray]:
            scores = await asyncio.to_thread(score_payload, self._small, joined(payloads))
            return np.split(scores.probabilities, np.cumsum([len(p) for p in payloads])[:-1])

    deployment = serve.deployment(ray_actor_options={"num_cpus": limits.router_num_cpus}, max_ongoing_requests=256,
                                  logging_config={"enable_access_log": True})(serve.ingress()(BareDetector))
    serve.run(deployment.bind(), name=BARE_APP, route_prefix=route_prefix, blocking=False)


def deploy_http_floor(route_prefix: str = "/floor") -> None:
    """A no-op FastAPI ingress at ``route_prefix`` + ``/v1/detect``: what Serve's HTTP path alone costs."""
    from fastapi import FastAPI
    from ray import serve

    app = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256,
                      logging_config={"enable_access_log": True})
    @serve.ingress(app)
    class HttpFloor:
        @app.post("/v1/detect")
        async def detect(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"verdicts": []}

    serve.run(HttpFloor.bind(), name=FLOOR_APP, route_prefix=route_prefix, blocking=False)


async def open_loop(url: str, texts: Sequence[str], rate: float, seconds: float, timeout_s: float = 30.0,
                    max_in_flight: int = 512) -> dict[str, Any]:
    """Send one text to ``{url}/v1/detect`` every ``1/rate`` s for ``seconds``; latency percentiles of
    the answered ones (from the scheduled send), achieved rate, errors, and sends skipped because
    ``max_in_flight`` were outstanding (the path could not keep up)."""
    check_loopback(url)
    latencies: list[float] = []
    counts = {"sent": 0, "errors": 0, "lost": 0, "skipped": 0}
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=64)

    async def one(http: httpx.AsyncClient, text: str, scheduled: float) -> None:
        try:
            response = await http.post("/v1/detect", json={"samples": [{"text": text}]})
        except httpx.HTTPError:
            counts["lost"] += 1
            return
        if response.status_code != 200:
            counts["errors"] += 1
            return
        latencies.append((time.perf_counter() - scheduled) * 1000.0)

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            scheduled = started + i / rate
            await asyncio.sleep(max(scheduled - time.perf_counter(), 0.0))
            if len(tasks) >= max_in_flight:
                counts["skipped"] += 1
                continue
            counts["sent"] += 1
            task = asyncio.create_task(one(http, texts[i % len(texts)], scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"offered_rps": rate, "seconds": elapsed, **counts, "answered": len(latencies),
            "achieved_rps": len(latencies) / elapsed,
            **{f"p{q}_ms": float(np.percentile(latencies, q)) if latencies else None for q in (50, 95, 99)}}


async def verdict_timings(url: str, texts: Sequence[str], clients: int, requests: int) -> dict[str, Any]:
    """``requests`` posts by ``clients`` concurrent loops; percentiles of the router's own per-batch
    timings in each verdict (``latency_ms``: small tier, policy + budget, total) and the tiers seen."""
    check_loopback(url)
    timings: dict[str, list[float]] = {}
    sources: dict[str, int] = {}
    left = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in left:
            response = await http.post("/v1/detect", json={"samples": [{"text": texts[i % len(texts)]}]})
            response.raise_for_status()
            verdict = response.json()["verdicts"][0]
            sources[verdict["source"]] = sources.get(verdict["source"], 0) + 1
            for part, value in verdict["latency_ms"].items():
                timings.setdefault(part, []).append(value)

    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return {"requests": requests, "clients": clients, "sources": sources,
            **{f"{part}_ms": {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}
               for part, values in timings.items()}}
