"""The small tier as the router sees it: :class:`LocalSmallTier` (scored in the router replica) or
:class:`DetectorClient` (the ``SmallDetector`` deployment); both answer ``score(payload)`` and ``ready()``.

``SmallDetector`` hosts the fitted small tier (detector + calibrator), batched across requests, for
heavy detectors (MiniLM, the fine-tuned transformer, the CNN: anything worth its own replicas or a
GPU). Cheap ones (:data:`LIGHT_DETECTORS`) run inside the router replicas instead (``serve.small_tier``).

Each call carries a list of samples (texts or feature rows); ``@serve.batch`` gathers calls until
``max_batch_size`` *samples* are waiting (or ``batch_wait_timeout_s`` passes) and scores them in
one vectorised pass, off the event loop so the next batch can fill meanwhile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from cascade.config import CascadeConfig
from deployments.answers import SmallScores
from deployments.payloads import Payload, joined, samples_in


def score_payload(small: Any, X: Payload) -> SmallScores:
    """Calibrated probabilities and policy features of a :class:`~cascade.small.SmallTier` for ``X``."""
    features = np.asarray(small.features(X), dtype=float)  # calibrated probabilities come first: one pass
    return SmallScores(probabilities=features[:, : small.n_classes], features=features)


class LocalSmallTier:
    """The small tier in this process (a router replica, or the in-process app): scored off the event loop."""

    def __init__(self, small: Any) -> None:
        self.small = small

    async def score(self, payload: Payload) -> SmallScores:
        return await asyncio.to_thread(score_payload, self.small, payload)

    async def ready(self) -> bool:
        return True


class DetectorClient:
    """The ``SmallDetector`` deployment, asked in chunks of at most ``chunk`` samples (its batch size)."""

    def __init__(self, handle: Any, chunk: int) -> None:
        self.handle = handle
        self.chunk = chunk

    async def score(self, payload: Payload) -> SmallScores:
        chunks = [payload[start:start + self.chunk] for start in range(0, len(payload), self.chunk)]
        parts: list[Any] = await asyncio.gather(*(self.handle.predict.remote(chunk) for chunk in chunks))
        return SmallScores(probabilities=np.concatenate([p.probabilities for p in parts]),
                           features=np.concatenate([p.features for p in parts]))

    async def ready(self) -> bool:
        return bool(await self.handle.ready.remote())


LIGHT_DETECTORS = ("tfidf-lr", "isolation-forest", "tabular-lr", "tabular-hgb", "pixel-lr")
"""Detector kinds cheap enough on CPU to run inside each router replica (``serve.small_tier: auto``)."""


def small_in_router(config: CascadeConfig) -> bool:
    """Whether the small tier runs inside the router replicas (else in the ``SmallDetector`` deployment)."""
    placement = config.serve.small_tier
    return config.detector.kind in LIGHT_DETECTORS if placement == "auto" else placement == "router"


@serve.deployment
class SmallDetector:
    """Loads the small tier from ``small_dir`` at start, so a bad artifact fails the deploy."""

    def __init__(self, small_dir: str, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        from cascade.small import SmallTier

        self._small = SmallTier.load(Path(small_dir))
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def ready(self) -> bool:
        """Reachable means loaded: the constructor loaded the small tier."""
        return True

    @serve.batch(batch_size_fn=samples_in)
    async def predict(self, payloads: list[Payload]) -> list[SmallScores]:
        """Score every waiting request's samples together; return one result per request."""
        scores = await asyncio.to_thread(score_payload, self._small, joined(payloads))
        bounds = np.cumsum([len(p) for p in payloads])[:-1]
        return [SmallScores(probabilities=probabilities, features=features)
                for probabilities, features in zip(np.split(scores.probabilities, bounds),
                                                   np.split(scores.features, bounds))]
