"""A non-LLM expert for images: a fitted :class:`~cascade.detectors.image.PixelCNN` served as the
large tier, behind the same :class:`~cascade.experts.protocol.Expert` interface as the LLM experts.

It spends no tokens; each judged sample costs ``CostModel.expert_per_call`` (it is the expensive
tier). A CNN generates no text: :meth:`CnnExpert.explain` states the class probabilities it gave
and refuses follow-up questions with an :class:`~cascade.experts.errors.ExpertError`.
:func:`fitted_cnn` trains the CNN on a labelled pool once and caches it.

>>> import cascade.data
>>> train = cascade.data.load("fashion-mnist", split="train", seed=0, max_samples=10000)  # doctest: +SKIP
>>> expert = CnnExpert(fitted_cnn(train), ["normal", "anomaly"])                          # doctest: +SKIP
>>> expert.judge(train.images[:4]).probs.shape                                            # doctest: +SKIP
(4, 2)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.data import Dataset
from cascade.detectors.image import PixelCNN
from cascade.experts.errors import ExpertError
from cascade.experts.protocol import ExpertInput, InProcessExpert
from cascade.experts.result import ExpertResult, Explanation
from cascade.paths import cache_dir
from cascade.types import CostModel

CACHE = "experts"


class CnnExpert(InProcessExpert):
    """Judges images with a fitted CNN; same :class:`ExpertResult` as an LLM expert, zero tokens."""

    def __init__(self, detector: PixelCNN, label_names: Sequence[str], cost: CostModel | None = None) -> None:
        if len(label_names) != detector.n_classes:
            raise ValueError(f"{len(label_names)} label names for a CNN with {detector.n_classes} classes")
        self.detector = detector
        self.label_names = tuple(label_names)
        self.cost = cost or CostModel()

    def judge(self, X: ExpertInput) -> ExpertResult:
        """The CNN's class probabilities for images ``(n, h, w)`` or flattened rows ``(n, h * w)``."""
        start = time.perf_counter()
        if len(X) == 0:
            return ExpertResult.empty(self.label_names)
        probs = self.detector.predict_proba(np.asarray(X))
        return ExpertResult.tokenless(probs, time.perf_counter() - start, self.cost.expert_per_call, self.label_names)

    def explain(self, sample: str | np.ndarray, question: str | None = None,
                history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        """The class probabilities the CNN gives one image (no text generation, so no follow-ups)."""
        start = time.perf_counter()
        if question is not None or history:
            raise ExpertError("the cnn expert generates no text, so it cannot answer questions")
        if isinstance(sample, str):
            raise ExpertError("the cnn expert judges images, not text")
        image = np.asarray(sample)
        probs = self.detector.predict_proba(image.reshape(1, *image.shape))[0]
        ranked = ", ".join(f"{self.label_names[i]} {probs[i]:.2f}" for i in np.argsort(-probs))
        text = f"The CNN gives {ranked} (a CNN has no rationale beyond its class probabilities)."
        history = [{"role": "user", "content": f"image of shape {image.shape}"},
                   {"role": "assistant", "content": text}]
        return Explanation(text=text, history=history, prompt_tokens=0, completion_tokens=0,
                           latency_s=time.perf_counter() - start, cost=self.cost.expert_per_call, truncated=False)


def fitted_cnn(pool: Dataset, **params: Any) -> PixelCNN:
    """A :class:`PixelCNN` (hyper-parameters ``params``) trained on ``pool``'s images and labels.

    The fitted CNN is saved under ``$CASCADE_HOME/cache/experts/pixel-cnn-<hash>``, the hash
    covering the pool's ids, labels and pixels and the hyper-parameters, so a second call loads it
    instead of training. A corrupt cached artifact raises ``ArtifactError`` naming the file
    (delete that folder to retrain).
    """
    if pool.images is None:
        raise ValueError(f"a CNN trains on images, but dataset '{pool.name}' holds {pool.modality}")
    cnn = PixelCNN(**params)
    directory = cache_dir(CACHE) / f"{cnn.kind}-{_pool_hash(pool, cnn.get_params())}"
    if directory.is_dir():
        return PixelCNN.load(directory)
    cnn.fit(pool.images, pool.y)
    staging = tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent)
    cnn.save(staging)
    try:
        Path(staging).rename(directory)
    except OSError:  # another process cached the same CNN meanwhile
        shutil.rmtree(staging)
    return cnn


def _pool_hash(pool: Dataset, params: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"dataset": pool.name, "params": params}, sort_keys=True).encode())
    digest.update("\n".join(map(str, pool.ids)).encode())
    for array in (np.asarray(pool.y, dtype=np.int64), np.ascontiguousarray(pool.images)):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]
