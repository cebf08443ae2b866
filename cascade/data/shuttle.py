"""ODDS shuttle (49,097 rows x 9 features, 7.15 % anomalies), shipped inside the PyPI package `river`."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy as np

from cascade.data.dataset import Dataset
from cascade.data.source import DatasetMissing, DatasetSource
from cascade.paths import data_dir

NAME = "shuttle"
FILE = "shuttle.csv.gz"


def _river_file() -> Path | None:
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / FILE
    return path if path.is_file() else None


def fetch(progress: bool = True) -> Path:
    target = data_dir(NAME) / FILE
    if target.is_file():
        return target
    source = _river_file()
    if source is None:
        raise RuntimeError("the shuttle data ships with the PyPI package 'river': pip install river==0.26.1")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def load() -> Dataset:
    path = data_dir(NAME) / FILE
    if not path.is_file():
        raise DatasetMissing(NAME, path)
    with gzip.open(path, "rt") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = np.array(list(reader), dtype=np.float64)
    features, y = rows[:, :-1], rows[:, -1].astype(np.int64)
    return Dataset(
        name=NAME,
        y=y,
        label_names=("normal", "anomaly"),
        ids=np.array([f"shuttle/{i}" for i in range(len(y))]),
        groups=np.where(y == 1, "anomaly", "normal"),
        features=features,
        feature_names=tuple(header[:-1]),
    )


SOURCE = DatasetSource(NAME, "features", ("normal", "anomaly"), "ODDS shuttle, 9 numeric features", "PyPI river",
                       fetch, load)
