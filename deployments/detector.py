"""``SmallDetector``: the fitted small tier (detector + calibrator), batched across requests.

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

from deployments.answers import Payload, SmallScores


def score_small(small: Any, X: Payload) -> SmallScores:
    """Calibrated probabilities and policy features of a :class:`~cascade.small.SmallTier` for ``X``."""
    features = np.asarray(small.features(X), dtype=float)  # calibrated probabilities come first: one pass
    return SmallScores(probabilities=features[:, : small.n_classes], features=features)


def _samples_in(payloads: list[Payload]) -> int:
    return sum(len(p) for p in payloads)


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

    @serve.batch(batch_size_fn=_samples_in)
    async def predict(self, payloads: list[Payload]) -> list[SmallScores]:
        """Score every waiting request's samples together; return one result per request."""
        texts = isinstance(payloads[0], list)
        X: Payload = [t for p in payloads for t in p] if texts else np.concatenate(payloads)
        scores = await asyncio.to_thread(score_small, self._small, X)
        bounds = np.cumsum([len(p) for p in payloads])[:-1]
        return [SmallScores(probabilities=probabilities, features=features)
                for probabilities, features in zip(np.split(scores.probabilities, bounds),
                                                   np.split(scores.features, bounds))]
