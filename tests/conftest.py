"""Shared fixtures: real data from the cascade home (fetched on first use), a tiny real Llama, and
the serving tests' tuned SpamAssassin cascade (config, tiers, texts, the knn-vote expert)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade import data
from cascade.config import CascadeConfig, ExpertConfig
from cascade.models import build_tiny_llama
from serving import KeptDeferred, Tiers, load_tiers, split_by_score, tune_artifact
from tables import write_tumours


@pytest.fixture(scope="session", autouse=True)
def certify_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' tunings count their certify-part uses in a ledger of this session, not the user's."""
    import policies.certify_ledger

    root = tmp_path_factory.mktemp("certify-uses")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policies.certify_ledger, "cache_dir", lambda name: root / name)
        yield root


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + BPE tokenizer folder, built for this test session."""
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def spamassassin() -> data.Dataset:
    data.fetch("spamassassin", progress=False)
    return data.load("spamassassin")


@pytest.fixture(scope="session")
def shuttle() -> data.Dataset:
    data.fetch("shuttle", progress=False)
    return data.load("shuttle")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> CascadeConfig:
    return tune_artifact(tmp_path_factory.mktemp("artifact") / "spam")


@pytest.fixture(scope="module")
def tiers(config: CascadeConfig) -> Tiers:
    return load_tiers(config)


@pytest.fixture(scope="module")
def pool(spamassassin: data.Dataset) -> data.Dataset:
    return spamassassin.subset(np.arange(0, len(spamassassin), 20))


@pytest.fixture(scope="module")
def texts(spamassassin: data.Dataset) -> list[str]:
    """200 mails, cut to the app's 2000-character limit."""
    return [spamassassin.texts[i][:2000] for i in range(7, len(spamassassin), 23)][:200]  # type: ignore[index]


@pytest.fixture(scope="module")
def kept_and_deferred(tiers: Tiers, texts: list[str]) -> KeptDeferred:
    kept, deferred = split_by_score(tiers, texts)
    assert len(kept) >= 8 and len(deferred) >= 8
    return kept, deferred


@pytest.fixture(scope="module")
def knn_expert(pool: data.Dataset) -> Any:
    from cascade.experts import make_expert

    return make_expert(ExpertConfig(kind="knn-vote", shots=4, labels=["ham", "spam"]), pool=pool)


@pytest.fixture(scope="module")
def tumours_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder holding the breast-cancer table (``tumours.csv``) and, for the module, a ``CASCADE_HOME`` of
    its own in it (its score cache shared by the module's tunings)."""
    root = tmp_path_factory.mktemp("tumours")
    write_tumours(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASCADE_HOME", str(root / "home"))
        yield root
