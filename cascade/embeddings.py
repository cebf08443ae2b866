"""MiniLM sentence embeddings with an on-disk cache keyed by text hash.

>>> enc = shared_embedder("minilm")                   # doctest: +SKIP
>>> enc.encode(["cheap meds", "meeting at 3"]).shape   # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import functools
import hashlib
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cascade.paths import cache_dir


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


class Embedder:
    """Unit-normalised sentence embeddings from a sentence-transformers model folder.

    Embeddings are cached per (model, text) in ``$CASCADE_HOME/cache/embeddings/<model>/`` as
    safetensors shards, so scoring the same corpus twice embeds it once. Only calls with at least
    ``remember_min`` new texts are remembered (corpora, not serving traffic): a single unseen
    request is embedded and forgotten, so serving neither grows memory nor writes a shard per
    request.
    """

    def __init__(self, model: str = "minilm", batch_size: int = 64, max_seq_length: int = 256,
                 cache: bool = True, remember_min: int = 16) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.cache = cache
        self.remember_min = remember_min
        self._encoder: Any = None
        self._memory: dict[str, np.ndarray] = {}
        self._cache_read = False

    @property
    def dimension(self) -> int:
        return int(self._load().get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings ``(n, d)`` float32, unit length, in input order."""
        keys = [text_key(t) for t in texts]
        if self.cache and not self._cache_read:
            self._memory.update(self._read_cache())
            self._cache_read = True
        known: Mapping[str, np.ndarray] = self._memory
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self._memory}.items())
        if missing:
            vectors = self._load().encode(
                [t for _, t in missing], batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            ).astype(np.float32)
            fresh = {k: v for (k, _), v in zip(missing, vectors)}
            if len(fresh) < self.remember_min:
                known = ChainMap(fresh, self._memory)
            else:
                self._memory.update(fresh)
                if self.cache:
                    self._write_cache(fresh)
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([known[k] for k in keys])

    def _load(self) -> Any:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            from cascade.models import path

            self._encoder = SentenceTransformer(str(path(self.model)), device="cpu")
            self._encoder.max_seq_length = self.max_seq_length
        return self._encoder

    def _cache_root(self) -> Path:
        name = Path(self.model).name if "/" in self.model else self.model
        return cache_dir("embeddings") / f"{name}-{self.max_seq_length}"

    def _read_cache(self) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        found: dict[str, np.ndarray] = {}
        root = self._cache_root()
        for shard in sorted(root.glob("*.safetensors")) if root.is_dir() else []:
            try:
                found.update(load_file(str(shard)))
            except Exception:  # a shard cut off mid-write is recomputed, not fatal
                shard.unlink(missing_ok=True)
        return found

    def _write_cache(self, fresh: dict[str, np.ndarray]) -> None:
        from safetensors.numpy import save_file

        root = self._cache_root()
        root.mkdir(parents=True, exist_ok=True)
        shard = root / f"{text_key(''.join(sorted(fresh)))[:16]}.safetensors"
        partial = shard.with_suffix(".partial")
        save_file(fresh, str(partial))
        partial.rename(shard)


@functools.lru_cache(maxsize=4)
def shared_embedder(model: str = "minilm") -> Embedder:
    """The process-wide :class:`Embedder` for ``model``: the encoder and the cache load once."""
    return Embedder(model)
