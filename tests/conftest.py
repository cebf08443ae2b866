"""Shared fixtures: real data from the cascade home (fetched on first use), a tiny real Llama."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade import data
from cascade.models import build_tiny_llama


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
