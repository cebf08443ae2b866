"""MiniLM embeddings: one encoder per process, corpora cached on disk, serving traffic not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.embeddings import Embedder, shared_embedder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    return tmp_path


def shards(home: Path) -> list[Path]:
    return sorted((home / "cache" / "embeddings").rglob("*.safetensors"))


def test_the_shared_embedder_is_one_object_per_model() -> None:
    assert shared_embedder("minilm") is shared_embedder("minilm")


def test_a_corpus_is_written_to_disk_and_read_back_by_a_new_embedder(home: Path) -> None:
    texts = [f"mail number {i} about the quarterly meeting" for i in range(20)]
    first = Embedder("minilm", remember_min=16).encode(texts)
    assert len(shards(home)) == 1
    reader = Embedder("minilm")
    again = reader.encode(texts)
    assert reader._encoder is None  # every vector came from the disk cache, no model was loaded
    np.testing.assert_allclose(again, first, atol=1e-6)


def test_a_few_unseen_texts_are_embedded_but_neither_kept_nor_written(home: Path) -> None:
    embedder = Embedder("minilm", remember_min=16)
    vectors = embedder.encode(["cheap meds, click now", "lunch at noon?"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder._memory == {} and shards(home) == []


def test_known_and_unseen_texts_mix_in_input_order(home: Path) -> None:
    corpus = [f"invoice {i} is attached" for i in range(16)]
    embedder = Embedder("minilm", remember_min=16)
    known = embedder.encode(corpus)
    mixed = embedder.encode([corpus[3], "a brand new text", corpus[0]])
    np.testing.assert_allclose(mixed[[0, 2]], known[[3, 0]], atol=1e-6)
    np.testing.assert_allclose(mixed[1], embedder.encode(["a brand new text"])[0], atol=1e-6)
