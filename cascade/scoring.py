"""Score once: run a tier over a split a single time and cache its per-sample outputs.

The cache key is a content hash of the data (ids and payload) and the expert's fingerprint
(:func:`cascade.experts.fingerprint.expert_fingerprint`: the config fields that change answers,
the prompt as built, the model files' identity, the vLLM / torch / transformers versions), so a
re-run with anything changed rescores and a re-run with nothing changed reads
``$CASCADE_HOME/cache/scores/<key>.safetensors``. Each entry also stores its cache format, the
fingerprint and the sample ids; on load all three are checked, and an entry that disagrees (an
older format, a changed fingerprint, other samples) or is damaged is recomputed with a warning,
never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cascade.artifact import ArtifactError, load_arrays, read_json, save_arrays, write_json
from cascade.data import Dataset
from cascade.paths import cache_dir

CACHE_KIND = "cascade-tier-scores"
CACHE_FORMAT = 2
log = logging.getLogger(__name__)
_progress_console: ContextVar[Any] = ContextVar("progress_console", default=None)


@contextmanager
def progress_to(console: Any) -> Iterator[None]:
    """Send scoring progress (lines and bars) to ``console``, e.g. the terminal while library
    output goes to a log file (:func:`cascade.logs.library_output_to`)."""
    token = _progress_console.set(console)
    try:
        yield
    finally:
        _progress_console.reset(token)


def progress_console() -> Any:
    """The rich console scoring progress goes to (default: standard output)."""
    from rich.console import Console

    return _progress_console.get() or Console()


@dataclass(frozen=True)
class TierScores:
    """Per-sample outputs of one tier on one split."""

    tier: str
    ids: np.ndarray
    y: np.ndarray
    probs: np.ndarray
    cost: np.ndarray
    latency_s: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    features: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pred(self) -> np.ndarray:
        return np.argmax(self.probs, axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.y

    @property
    def positive_prob(self) -> np.ndarray:
        return self.probs[:, -1]

    def subset(self, index: np.ndarray) -> "TierScores":
        """The same tier's outputs on ``index`` (integer indices or a boolean mask)."""
        return replace(self, ids=self.ids[index], y=self.y[index], probs=self.probs[index], cost=self.cost[index],
                       latency_s=self.latency_s[index], prompt_tokens=self.prompt_tokens[index],
                       completion_tokens=self.completion_tokens[index],
                       features=None if self.features is None else self.features[index])

    def save(self, stem: Path) -> None:
        arrays = {name: np.asarray(getattr(self, name)) for name in
                  ("y", "probs", "cost", "latency_s", "prompt_tokens", "completion_tokens")}
        if self.features is not None:
            arrays["features"] = self.features
        save_arrays(arrays, stem.with_suffix(".safetensors"))
        write_json(stem.with_suffix(".json"), CACHE_KIND,
                   {"tier": self.tier, "ids": [str(i) for i in self.ids], "meta": self.meta, "cache_format": CACHE_FORMAT})

    @classmethod
    def load(cls, stem: Path, fingerprint: dict[str, Any] | None = None,
             ids: np.ndarray | None = None) -> "TierScores":
        """Read a cache entry; ``ArtifactError`` when it is damaged, of another cache format, or
        was computed for another fingerprint or other sample ids than the ones given."""
        meta = read_json(stem.with_suffix(".json"), CACHE_KIND)
        if meta.get("cache_format") != CACHE_FORMAT:
            raise ArtifactError(f"{stem}: cache format {meta.get('cache_format')}, this cascade writes {CACHE_FORMAT}")
        if fingerprint is not None and meta["meta"].get("fingerprint") != _jsonable(fingerprint):
            raise ArtifactError(f"{stem}: computed for another expert fingerprint")
        if ids is not None and meta["ids"] != [str(i) for i in ids]:
            raise ArtifactError(f"{stem}: computed for other samples")
        arrays = load_arrays(stem.with_suffix(".safetensors"))
        if len(meta["ids"]) != len(arrays["y"]):
            raise ArtifactError(f"{stem}: ids and arrays disagree in length")
        return cls(tier=meta["tier"], ids=np.array(meta["ids"]), features=arrays.get("features"),
                   meta=meta["meta"], **{k: v for k, v in arrays.items() if k != "features"})


def content_hash(*parts: Any) -> str:
    """SHA-256 over JSON-able parts, numpy arrays and lists of strings."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str(part.dtype).encode() + str(part.shape).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, list) and part and isinstance(part[0], str):
            for text in part:
                digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def dataset_hash(dataset: Dataset) -> str:
    payload = dataset.texts if dataset.texts is not None else dataset.X
    return content_hash(dataset.name, [str(i) for i in dataset.ids], payload, dataset.y)


def cached(key: str, compute: Callable[[], TierScores], refresh: bool = False,
           fingerprint: dict[str, Any] | None = None, ids: np.ndarray | None = None) -> tuple[TierScores, bool]:
    """Return (scores, hit): the cached scores for ``key`` or freshly computed (and stored) ones.

    ``fingerprint`` and ``ids`` are stored with fresh scores and checked against a cached entry;
    a stale or damaged entry is recomputed (and says so in the log).
    """
    stem = cache_dir("scores") / key
    if not refresh and stem.with_suffix(".json").is_file():
        try:
            return TierScores.load(stem, fingerprint, ids), True
        except ArtifactError as exc:
            log.warning("score cache entry not reused, recomputing: %s", exc)
    scores = compute()
    if fingerprint is not None:
        scores = replace(scores, meta={**scores.meta, "fingerprint": _jsonable(fingerprint)})
    scores.save(stem)
    return scores, False


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons with stored meta."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def score_expert(expert: Any, dataset: Dataset, tier: str, batch_size: int | None = None,
                 progress: bool = True) -> TierScores:
    """Judge ``dataset`` with an expert, the whole split per call (so an engine batches it as it
    likes) or ``batch_size`` samples per call, with a progress bar."""
    from rich.progress import Progress

    chunks = []
    step = batch_size or max(len(dataset), 1)
    with Progress(disable=not progress, transient=True, console=progress_console()) as bar:
        task = bar.add_task(f"scoring {tier}", total=len(dataset))
        for start in range(0, len(dataset), step):
            index = np.arange(start, min(start + step, len(dataset)))
            chunks.append(expert.judge(_payload(dataset.subset(index))))
            bar.advance(task, len(index))
    return TierScores(
        tier=tier, ids=dataset.ids, y=dataset.y,
        probs=np.concatenate([c.probs for c in chunks]),
        cost=np.concatenate([c.cost for c in chunks]),
        latency_s=np.concatenate([c.latency_s for c in chunks]),
        prompt_tokens=np.concatenate([c.prompt_tokens for c in chunks]),
        completion_tokens=np.concatenate([c.completion_tokens for c in chunks]),
        meta={"truncated": int(np.sum(np.concatenate([c.truncated for c in chunks])))},
    )


def score_small(small: Any, dataset: Dataset, cost_per_call: float) -> TierScores:
    """Calibrated probabilities and uncertainty features of the small tier on ``dataset``."""
    start = time.perf_counter()
    X = _payload(dataset)
    features = small.features(X)  # calibrated probabilities come first: one detector pass
    probs = features[:, : small.n_classes]
    elapsed = time.perf_counter() - start
    n = len(dataset)
    return TierScores(
        tier="small", ids=dataset.ids, y=dataset.y, probs=probs,
        cost=np.full(n, cost_per_call), latency_s=np.full(n, elapsed / max(n, 1)),
        prompt_tokens=np.zeros(n, dtype=np.int64), completion_tokens=np.zeros(n, dtype=np.int64),
        features=features,
    )


def _payload(dataset: Dataset) -> Any:
    return dataset.X


def score_with_ray_data(expert_factory: Callable[[], Any], dataset: Dataset, tier: str,
                        batch_size: int = 16, concurrency: int = 1, num_cpus: float = 1.0) -> TierScores:
    """Score a text dataset on Ray Data: ``map_batches`` with one expert per actor.

    For data that outgrows one machine; on a Ray cluster each actor holds its own engine. The
    result has the same format (and cache) as local scoring.
    """
    import ray

    if dataset.texts is None:
        raise ValueError("Ray Data scoring takes text datasets")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)

    class _Judge:
        def __init__(self) -> None:
            self.expert = expert_factory()

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = self.expert.judge([str(t) for t in batch["text"]])
            return {"row": batch["row"], "probs": result.probs, "cost": result.cost,
                    "latency_s": result.latency_s, "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens, "truncated": result.truncated}

    items = [{"row": i, "text": t} for i, t in enumerate(dataset.texts)]
    out = (ray.data.from_items(items)
           .map_batches(_Judge, batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus)
           .take_all())
    out.sort(key=lambda r: r["row"])
    return TierScores(
        tier=tier, ids=dataset.ids, y=dataset.y,
        probs=np.stack([r["probs"] for r in out]),
        cost=np.array([r["cost"] for r in out], dtype=float),
        latency_s=np.array([r["latency_s"] for r in out], dtype=float),
        prompt_tokens=np.array([r["prompt_tokens"] for r in out], dtype=np.int64),
        completion_tokens=np.array([r["completion_tokens"] for r in out], dtype=np.int64),
        meta={"truncated": int(sum(bool(r["truncated"]) for r in out))},
    )
