"""The named datasets: how each is fetched, loaded and split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cascade.data import fashion_mnist, shuttle, spamassassin
from cascade.data.dataset import SPLITS, Dataset, split_indices, stratified_subsample
from cascade.data.files import FILE_FORMATS, inspect_file, load_file
from cascade.data.source import DatasetMissing, DatasetSource

SOURCES: dict[str, DatasetSource] = {source.name: source for source in (spamassassin.SOURCE, shuttle.SOURCE,
                                                                         fashion_mnist.SOURCE)}


def fetch(name: str, progress: bool = True) -> Path:
    """Fetch a named dataset into the cascade home (no-op when it is already there)."""
    return _source(name).fetch(progress=progress)


def load(
    name: str,
    split: str = "all",
    seed: int = 0,
    train_fraction: float = 0.6,
    calibration_fraction: float = 0.2,
    max_samples: int | None = None,
    **options: Any,
) -> Dataset:
    """Load a dataset, optionally subsampled (stratified) and cut to one split.

    ``name`` is a registered dataset or a file format (``"csv"``, ``"jsonl"``, ``"parquet"``) with
    ``path=...`` and the column options of :func:`cascade.data.files.load_file`. Splits are stratified on label and group and
    deterministic in ``seed``.

    >>> test = load("spamassassin", split="test", seed=0)  # doctest: +SKIP
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {SPLITS}")
    if name in FILE_FORMATS:
        path = options.pop("path", None)
        if path is None:
            raise ValueError(f"dataset '{name}' needs path=...")
        dataset = load_file(path, **options)
    else:
        dataset = _source(name).load(**options)
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.subset(stratified_subsample(dataset.y, dataset.groups, max_samples, seed))
    if split == "all":
        return dataset
    index = split_indices(dataset.y, dataset.groups, seed, train_fraction, calibration_fraction)[split]
    return dataset.subset(index)


def load_splits(name: str, seed: int = 0, **kwargs: Any) -> dict[str, Dataset]:
    """All three splits at once (loads the source once)."""
    full = load(name, split="all", seed=seed, **{k: v for k, v in kwargs.items() if k not in ("train_fraction", "calibration_fraction")})
    index = split_indices(full.y, full.groups, seed, kwargs.get("train_fraction", 0.6), kwargs.get("calibration_fraction", 0.2))
    return {split: full.subset(idx) for split, idx in index.items()}


def summary(name: str) -> dict[str, Any]:
    """Size, positive rate and availability of a named dataset (loads it if fetched)."""
    source = _source(name)
    row: dict[str, Any] = {"name": name, "modality": source.modality, "origin": source.origin,
                           "description": source.description}
    try:
        dataset = source.load()
    except DatasetMissing:
        return {**row, "fetched": False, "samples": None, "positive_rate": None}
    return {**row, "fetched": True, "samples": len(dataset), "positive_rate": float(np.mean(dataset.y == 1))}


def describe(name: str, **options: Any) -> tuple[str, tuple[str, ...]]:
    """Modality and class names of a dataset without loading it (a user file is read, not encoded).

    ``options`` are :func:`load`'s: ``path`` and column options for files, ``normal_classes`` for
    Fashion-MNIST (which stays binary).
    """
    if name in FILE_FORMATS:
        path = options.pop("path", None)
        if path is None:
            raise ValueError(f"dataset '{name}' needs path=...")
        options.pop("normal_classes", None)
        schema = inspect_file(path, **options)
        return schema.modality, schema.label_names
    source = _source(name)
    return source.modality, source.label_names


def _source(name: str) -> DatasetSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; choose one of {sorted(SOURCES)} or {tuple(FILE_FORMATS)}") from None
