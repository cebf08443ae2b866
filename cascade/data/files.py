"""User data from CSV or JSONL: one text column or several feature columns, plus a label column."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cascade.data.dataset import Dataset


def load_file(
    path: str | Path,
    label_column: str = "label",
    text_column: str | None = None,
    feature_columns: list[str] | None = None,
    positive_label: str | None = None,
    group_column: str | None = "group",
    id_column: str | None = "id",
) -> Dataset:
    """Load a ``.csv`` or ``.jsonl`` file.

    Labels: with ``positive_label`` the task is binary (that value is 1, anything else 0);
    otherwise the sorted distinct label values become classes 0..k-1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if (text_column is None) == (feature_columns is None):
        raise ValueError("give exactly one of text_column or feature_columns")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    needed = [label_column, *( [text_column] if text_column else feature_columns or [])]
    for lineno, row in enumerate(rows, start=2 if path.suffix == ".csv" else 1):
        missing = [c for c in needed if c not in row or row[c] is None or row[c] == ""]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing value for column(s) {missing}")
    raw_labels = [str(row[label_column]) for row in rows]
    if positive_label is not None:
        label_names: tuple[str, ...] = (f"not-{positive_label}", positive_label)
        y = np.array([int(v == positive_label) for v in raw_labels], dtype=np.int64)
    else:
        label_names = tuple(sorted(set(raw_labels)))
        lookup = {name: i for i, name in enumerate(label_names)}
        y = np.array([lookup[v] for v in raw_labels], dtype=np.int64)
    groups = np.array([str(row.get(group_column, "all")) if group_column else "all" for row in rows])
    ids = np.array([str(row[id_column]) if id_column and id_column in row else f"{path.stem}/{i}" for i, row in enumerate(rows)])
    common: dict[str, Any] = dict(name=path.stem, y=y, label_names=label_names, ids=ids, groups=groups)
    if text_column:
        return Dataset(texts=[str(row[text_column]) for row in rows], **common)
    features = np.empty((len(rows), len(feature_columns or [])), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, column in enumerate(feature_columns or []):
            try:
                value = float(row[column])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: row {i}: column '{column}' is not a number: {row[column]!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}: row {i}: column '{column}' is not finite: {value}")
            features[i, j] = value
    return Dataset(features=features, feature_names=tuple(feature_columns or []), **common)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if path.suffix in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: each line must be a JSON object")
                rows.append(row)
        return rows
    raise ValueError(f"{path}: unsupported file type '{path.suffix}' (use .csv or .jsonl)")
