"""User data from CSV, JSONL or Parquet: read the file, infer its columns, build a :class:`Dataset`.

With no ``text_column`` and no ``feature_columns`` the columns are inferred (see
:mod:`cascade.data.columns`) and one line says what was chosen; explicit columns win. Column
errors name the config field to change (``dataset.feature_columns: ...``).

>>> dataset = load_file("wine.csv", label_column="target")  # doctest: +SKIP
wine.csv: 178 rows, label 'target' with 3 classes (0, 1, 2); features: 13 numeric columns ...
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cascade.data.columns import FileSchema, Table, encode_features, encode_labels, infer_schema
from cascade.data.dataset import Dataset

FILE_FORMATS: dict[str, tuple[str, ...]] = {"csv": (".csv",), "jsonl": (".jsonl", ".ndjson"),
                                            "parquet": (".parquet", ".pq")}
logger = logging.getLogger("cascade.data")
_TABLES: dict[tuple[str, int, int], Table] = {}
_ANNOUNCED: set[tuple[Any, ...]] = set()


def file_format(path: str | Path) -> str:
    """``csv``, ``jsonl`` or ``parquet``, from the file name's suffix."""
    suffix = Path(path).suffix.lower()
    for name, suffixes in FILE_FORMATS.items():
        if suffix in suffixes:
            return name
    known = ", ".join(s for suffixes in FILE_FORMATS.values() for s in suffixes)
    raise ValueError(f"dataset.path: unsupported file type '{suffix}' ({path}); use one of {known}")


def inspect_file(
    path: str | Path,
    label_column: str = "label",
    text_column: str | None = None,
    feature_columns: list[str] | None = None,
    positive_label: str | None = None,
    group_column: str | None = "group",
    id_column: str | None = "id",
) -> FileSchema:
    """What :func:`load_file` would build from ``path`` (modality, columns, classes), without building it."""
    return infer_schema(read_table(path), label_column=label_column, text_column=text_column,
                        feature_columns=feature_columns, positive_label=positive_label,
                        group_column=group_column, id_column=id_column)


def load_file(
    path: str | Path,
    label_column: str = "label",
    text_column: str | None = None,
    feature_columns: list[str] | None = None,
    positive_label: str | None = None,
    group_column: str | None = "group",
    id_column: str | None = "id",
) -> Dataset:
    """Load a ``.csv``, ``.jsonl`` or ``.parquet`` file; columns not given are inferred.

    Labels may be strings. With ``positive_label`` the task is binary (that value is the anomaly
    class 1); otherwise two classes make a binary task whose positive class is ``1``/``true``/``yes``
    or else the rarer value, and more classes become 0..k-1 in sorted order.
    """
    table = read_table(path)
    schema = infer_schema(table, label_column=label_column, text_column=text_column, feature_columns=feature_columns,
                          positive_label=positive_label, group_column=group_column, id_column=id_column)
    _announce(schema, (str(Path(path).resolve()), label_column, text_column, tuple(feature_columns or ()),
                       positive_label))
    n = table.n_rows
    groups = table.strings(group_column) if group_column and group_column in table.columns else np.full(n, "all")
    if id_column and id_column in table.columns:
        ids = table.strings(id_column)
    else:
        ids = np.array([f"{table.name}/{i}" for i in range(n)])
    common: dict[str, Any] = dict(name=table.name, y=encode_labels(table, schema), label_names=schema.label_names,
                                  ids=ids, groups=groups)
    if schema.modality == "text":
        return Dataset(texts=table.text(schema.text_column), **common)  # type: ignore[arg-type]
    features, names = encode_features(table, schema)
    return Dataset(features=features, feature_names=names, **common)


def read_table(path: str | Path) -> Table:
    """The file's columns (cached per file version, so checking a config and loading it read it once)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset.path: no such data file '{path}' (relative paths start where cascade runs)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _TABLES:
        fmt = file_format(path)
        columns, lines = _read_parquet(path) if fmt == "parquet" else _read_jsonl(path) if fmt == "jsonl" else _read_csv(path)
        if not lines:
            raise ValueError(f"{path}: no rows")
        if len(_TABLES) >= 4:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = Table(name=path.stem, source=str(path), columns=columns, lines=np.asarray(lines))
    return _TABLES[key]


def _announce(schema: FileSchema, key: tuple[Any, ...]) -> None:
    """Say once per process and file what was read from it."""
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        logger.info(schema.describe())


def _read_csv(path: Path) -> tuple[dict[str, list[Any]], list[int]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty file (a CSV needs a header line)")
        rows, lines = [], []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
            rows.append(row)
            lines.append(reader.line_num)
    columns = {name: [row[j] if row[j] != "" else None for row in rows] for j, name in enumerate(header)}
    return columns, lines


def _read_jsonl(path: Path) -> tuple[dict[str, list[Any]], list[int]]:
    records, lines = [], []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object")
            records.append(record)
            lines.append(lineno)
    names = list(dict.fromkeys(key for record in records for key in record))
    return {name: [record.get(name) for record in records] for name in names}, lines


def _read_parquet(path: Path) -> tuple[dict[str, list[Any]], list[int]]:
    import pyarrow.parquet as pq

    try:
        columns = pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises several error types for a bad file
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    n = len(next(iter(columns.values()), []))
    return columns, list(range(1, n + 1))
