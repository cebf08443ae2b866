"""Small real tables the tests write to disk (scikit-learn's bundled data: no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def write_tumours(directory: Path) -> Path:
    """Breast cancer as ``directory/tumours.csv``: 30 numeric features and a ``diagnosis`` column
    (``benign`` / ``malignant``); returns the file."""
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 0, "malignant", "benign")
    path = Path(directory) / "tumours.csv"
    frame.to_csv(path, index=False)
    return path
