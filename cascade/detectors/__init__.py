"""Small-tier detectors by name (the kinds of :class:`cascade.config.DetectorConfig`).

Modules are imported on first use, so ``import cascade.detectors`` does not import torch.

>>> make_detector("isolation-forest", n_estimators=50)
IsolationForestDetector(n_estimators=50)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cascade.artifact import ArtifactError
from cascade.detectors.base import DETECTOR_FORMAT, Detector, DetectorBase

DETECTORS: dict[str, str] = {
    "tfidf-lr": "cascade.detectors.text:TfidfLogistic",
    "tfidf-knn": "cascade.detectors.text:TfidfKnn",
    "embedding-lr": "cascade.detectors.embedding:EmbeddingLogistic",
    "embedding-knn": "cascade.detectors.embedding:EmbeddingKnn",
    "isolation-forest": "cascade.detectors.tabular:IsolationForestDetector",
    "tabular-lr": "cascade.detectors.tabular:TabularLogistic",
    "tabular-hgb": "cascade.detectors.tabular:TabularBoosting",
    "pyod": "cascade.detectors.pyod:PyODDetector",
    "minilm-finetune": "cascade.detectors.finetune:MiniLMClassifier",
    "pixel-lr": "cascade.detectors.image:PixelLogistic",
    "pixel-cnn": "cascade.detectors.image:PixelCNN",
}

MODALITY: dict[str, str] = {
    "tfidf-lr": "text", "tfidf-knn": "text", "embedding-lr": "text", "embedding-knn": "text", "minilm-finetune": "text",
    "isolation-forest": "features", "tabular-lr": "features", "tabular-hgb": "features", "pyod": "features",
    "pixel-lr": "image", "pixel-cnn": "image",
}
"""What each kind takes (its class's ``modality``), known without importing the class (and torch)."""
ONE_CLASS: frozenset[str] = frozenset({"tfidf-knn", "embedding-knn", "isolation-forest", "pyod"})
"""Kinds that always learn from normal samples only (their class's ``one_class``)."""


def detector_class(kind: str) -> type[DetectorBase]:
    """The class registered for ``kind``."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector kind '{kind}'; choose one of {sorted(DETECTORS)}")
    module, name = DETECTORS[kind].split(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def make_detector(kind: str, **params: Any) -> DetectorBase:
    """A new, unfitted detector of ``kind`` with hyper-parameters ``params``."""
    cls = detector_class(kind)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"detector '{kind}': bad parameters {sorted(params)} ({exc})") from exc


def load_detector(directory: str | Path) -> DetectorBase:
    """Load any saved detector, whatever its kind; a bad artifact raises ``ArtifactError`` naming the file."""
    kind = DetectorBase.saved_kind(directory)
    if kind not in DETECTORS:
        raise ArtifactError(f"{Path(directory) / DETECTOR_FORMAT.file}: unknown detector kind '{kind}'")
    return detector_class(kind).load(directory)


__all__ = ["DETECTORS", "MODALITY", "ONE_CLASS", "Detector", "DetectorBase", "detector_class", "load_detector", "make_detector"]
