"""Which columns of a user table are the text, the features and the label: inferred unless given.

Rules, applied to every column but the label, id and group columns:

* numeric columns (every value parses as a number) are features; a column of at least half numbers with
  a few other values is an error naming the first bad line;
* string columns with few distinct values (at most ``MAX_CATEGORIES`` and at most half the rows)
  are categorical features, one-hot encoded with scikit-learn's ``OneHotEncoder`` (``colour=red``);
* any other string column is free text (beside numeric or categorical columns, only if its values
  average ``TEXT_CHARS`` characters or more; shorter ones are names or ids and are left out).
  Exactly one free-text column makes a text dataset (the other columns are left out); with none,
  the numeric and categorical columns make a feature dataset; with several, the user must pick
  ``text_column``.

Explicit ``text_column`` / ``feature_columns`` win (string columns listed as features are one-hot
encoded). Every error names the config field to change.

Missing values (an empty cell, ``null``, ``NaN``) in feature columns are kept: a numeric one is NaN
in the feature matrix (the detector takes it natively or imputes it, see :meth:`FileSchema.describe`),
a categorical one is its own one-hot column (``colour=``). A column with no value at all is left
out. A missing label is an error naming its lines.

>>> table = Table("t", "t.csv", {"x": ["1", "2.5", "3"], "label": ["a", "b", "a"]}, np.array([2, 3, 4]))
>>> infer_schema(table, label_column="label").numeric_columns
('x',)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

MAX_CATEGORIES = 32
TEXT_CHARS = 20
_TRUE_WORDS = ("1", "true", "yes", "anomaly", "positive")


@dataclass(frozen=True)
class Table:
    """A file's columns as read (strings, numbers or ``None`` for a missing value) and each row's line."""

    name: str
    source: str
    columns: dict[str, list[Any]]
    lines: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.lines)

    def where(self, row: int) -> str:
        return f"{self.source}:{int(self.lines[row])}"

    def strings(self, column: str) -> np.ndarray:
        """The column as strings (integral numbers without a trailing ``.0``; missing as ``''``)."""
        return np.array([_as_string(value) for value in self.columns[column]], dtype=object)

    def text(self, column: str) -> list[str]:
        return ["" if _absent(value) else str(value) for value in self.columns[column]]

    def numbers(self, column: str, field: str) -> np.ndarray:
        """The column as floats, NaN where a value is missing; a non-numeric or infinite value raises
        naming its line and ``field``."""
        values = self.columns[column]
        try:
            numbers = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        except (TypeError, ValueError):
            row = next(i for i, v in enumerate(values) if v is not None and not _is_number(v))
            raise ValueError(f"{self.where(row)}: column '{column}' is not a number: {values[row]!r}; "
                             f"leave it out of {field}") from None
        infinite = np.flatnonzero(np.isinf(numbers))
        if len(infinite):
            row = int(infinite[0])
            raise ValueError(f"{self.where(row)}: column '{column}' is not finite ({values[row]!r}; "
                             f"{len(infinite)} such rows); leave those cells empty (missing) or the column "
                             f"out of {field}")
        return numbers

    def missing(self, column: str) -> np.ndarray:
        """The rows whose ``column`` holds no value (empty, ``null`` or ``NaN``)."""
        return np.flatnonzero([_absent(value) for value in self.columns[column]])


@dataclass(frozen=True)
class FileSchema:
    """What a user file holds: the modality, the columns used, the columns left out, the classes."""

    source: str
    n_rows: int
    modality: Literal["text", "features"]
    label_column: str
    label_names: tuple[str, ...]
    label_values: tuple[str, ...]
    """for each class, the file value(s) it stands for (``*`` = every other value)"""
    text_column: str | None = None
    numeric_columns: tuple[str, ...] = ()
    categorical_columns: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    inferred: bool = True
    missing: tuple[tuple[str, int], ...] = ()
    """missing cells per used column (only columns with some), in column order"""

    def describe(self, missing_handling: str | None = None) -> str:
        """One line: rows, classes, which columns were used (inferred or given) and the missing cells.

        ``missing_handling`` says what the chosen detector does with a missing number.
        """
        how = "inferred" if self.inferred else "given"
        classes = ", ".join(self.label_names)
        if len(self.label_names) == 2:
            classes += f"; anomaly = '{self.label_names[1]}'"
        if self.modality == "text":
            used = f"text column '{self.text_column}'"
        else:
            used = f"features: {len(self.numeric_columns)} numeric ({_short(self.numeric_columns)})"
            if self.categorical_columns:
                used += f", {len(self.categorical_columns)} categorical one-hot ({_short(self.categorical_columns)})"
        line = (f"{self.source}: {self.n_rows:,} rows, label '{self.label_column}' with {len(self.label_names)} "
                f"classes ({classes}); {used} [{how}]")
        if self.left_out:
            line += f"; left out: {_short(self.left_out)}"
        if self.missing:
            line += "; " + self._missing_summary(missing_handling)
        return line

    def _missing_summary(self, handling: str | None) -> str:
        cells = sum(count for _, count in self.missing)
        if len(self.missing) == 1:
            where = f"'{self.missing[0][0]}' ({cells / self.n_rows:.1%} of rows)"
        else:
            where = f"{len(self.missing)} columns ({_short([f'{c!r} {n:,}' for c, n in self.missing], 4)})"
        summary = f"missing: {cells:,} cells in {where}"
        if self.modality == "text":
            return summary + ", read as empty text"
        numeric = any(column in self.numeric_columns for column, _ in self.missing)
        categorical = any(column in self.categorical_columns for column, _ in self.missing)
        handled = [f"numbers {handling}" if categorical else handling] if numeric and handling else []
        if categorical:
            handled.append("an empty category is one-hot like any other ('name=')")
        return ", ".join([summary, *handled])


def infer_schema(
    table: Table,
    label_column: str = "label",
    text_column: str | None = None,
    feature_columns: list[str] | None = None,
    positive_label: str | None = None,
    group_column: str | None = "group",
    id_column: str | None = "id",
) -> FileSchema:
    """Decide modality, columns and classes for ``table``; explicit columns win over inference."""
    names = list(table.columns)
    if label_column not in table.columns:
        raise ValueError(f"dataset.label_column: no column '{label_column}' in {table.source} (columns: {_short(names, 12)})")
    if text_column is not None and feature_columns is not None:
        raise ValueError("dataset.text_column and dataset.feature_columns: give one of them (or neither, to infer)")
    for field, wanted in (("dataset.text_column", [text_column] if text_column else []),
                          ("dataset.feature_columns", feature_columns or [])):
        missing = [c for c in wanted if c not in table.columns]
        if missing:
            raise ValueError(f"{field}: no column {missing} in {table.source} (columns: {_short(names, 12)})")
    label_names, label_values = _classes(table, label_column, positive_label)
    reserved = {label_column, id_column, group_column}
    common: dict[str, Any] = dict(source=table.source, n_rows=table.n_rows, label_column=label_column,
                                  label_names=label_names, label_values=label_values)
    if text_column is not None:
        return FileSchema(modality="text", text_column=text_column, inferred=False,
                          missing=_missing(table, [text_column]), **common)
    if feature_columns is not None:
        if not feature_columns:
            raise ValueError("dataset.feature_columns: empty; list the columns to use, or leave it out to infer them")
        numeric, categorical, free_text = _kinds(table, feature_columns)
        empty = [c for c in feature_columns if c not in numeric + categorical + free_text]
        if empty:
            raise ValueError(f"dataset.feature_columns: column {empty} holds no value in {table.source}; leave it out")
        return FileSchema(modality="features", numeric_columns=numeric, categorical_columns=categorical + free_text,
                          inferred=False, missing=_missing(table, feature_columns), **common)
    candidates = [c for c in names if c not in reserved]
    numeric, categorical, free_text = _kinds(table, candidates)
    if numeric or categorical:  # beside table columns, short strings are names or ids, not text
        free_text = tuple(c for c in free_text if np.mean([len(t) for t in table.text(c)]) >= TEXT_CHARS)
    if len(free_text) == 1:
        return FileSchema(modality="text", text_column=free_text[0],
                          left_out=tuple(c for c in candidates if c != free_text[0]),
                          missing=_missing(table, [free_text[0]]), **common)
    if len(free_text) > 1:
        raise ValueError(f"dataset.text_column: {table.source} has several text columns {list(free_text)}; "
                         "set dataset.text_column to the one to classify (or dataset.feature_columns)")
    if not (numeric or categorical):
        raise ValueError(f"dataset.feature_columns: {table.source} has no numeric or categorical column besides "
                         f"the label '{label_column}' (columns: {_short(names, 12)})")
    left_out = tuple(c for c in candidates if c not in numeric + categorical)
    return FileSchema(modality="features", numeric_columns=numeric, categorical_columns=categorical,
                      left_out=left_out, missing=_missing(table, [*numeric, *categorical]), **common)


def encode_labels(table: Table, schema: FileSchema) -> np.ndarray:
    """Class indices 0..k-1 for each row (``*`` in ``label_values`` takes every other value)."""
    raw = table.strings(schema.label_column)
    y = np.zeros(len(raw), dtype=np.int64)
    for index, value in enumerate(schema.label_values):
        if value != "*":
            y[raw == value] = index
    return y


def encode_features(table: Table, schema: FileSchema) -> tuple[np.ndarray, tuple[str, ...]]:
    """The feature matrix: numeric columns as they are, then categorical ones one-hot (``name=value``)."""
    from sklearn.preprocessing import OneHotEncoder

    blocks = [table.numbers(c, "dataset.feature_columns")[:, None] for c in schema.numeric_columns]
    names = list(schema.numeric_columns)
    if schema.categorical_columns:
        values = np.column_stack([table.strings(c) for c in schema.categorical_columns])
        encoder = OneHotEncoder(sparse_output=False, dtype=np.float64, feature_name_combiner=_category_name)
        blocks.append(encoder.fit_transform(values))
        names += [str(n) for n in encoder.get_feature_names_out(list(schema.categorical_columns))]
    return np.column_stack(blocks), tuple(names)


def _classes(table: Table, label_column: str, positive_label: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    raw = table.strings(label_column)
    missing = np.flatnonzero(raw == "")
    if len(missing):
        lines = ", ".join(str(int(table.lines[row])) for row in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{table.source}: no value in label column '{label_column}' on "
                         f"line{'s' if len(missing) > 1 else ''} {lines}{more} "
                         f"({len(missing)} rows); fill or drop those rows")
    values, counts = np.unique(raw, return_counts=True)
    if positive_label is not None:
        if positive_label not in values:
            raise ValueError(f"dataset.positive_label: '{positive_label}' is not a value of column '{label_column}' "
                             f"(values: {_short(values.tolist(), 12)})")
        others = [v for v in values if v != positive_label]
        return ((others[0] if len(others) == 1 else f"not-{positive_label}", positive_label),
                (others[0] if len(others) == 1 else "*", positive_label))
    if len(values) < 2:
        raise ValueError(f"dataset.label_column: column '{label_column}' holds one value ({values[0]!r}); "
                         "a detector needs at least two classes")
    if len(values) == 2:
        truthy = [v for v in values if v.lower() in _TRUE_WORDS]
        rarer = values[0] if counts[0] < counts[1] else values[1]
        positive = truthy[0] if len(truthy) == 1 else rarer
        negative = next(v for v in values if v != positive)
        return (negative, positive), (negative, positive)
    order = tuple(sorted(values.tolist(), key=_natural))
    return order, order


def _kinds(table: Table, columns: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Split columns into numeric, categorical and free-text ones."""
    numeric, categorical, free_text = [], [], []
    for column in columns:
        present = [v for v in table.columns[column] if not _absent(v)]
        if not present:  # no value at all: neither kind
            continue
        if _all_numbers(present):
            numeric.append(column)
            continue
        numbers = sum(_is_number(v) for v in present)
        if 2 * numbers >= len(present):  # mostly numbers: the rest are typos or missing-value codes
            table.numbers(column, "dataset.feature_columns")
        distinct = len({_as_string(v) for v in present})
        if distinct <= MAX_CATEGORIES and distinct <= max(table.n_rows // 2, 2):
            categorical.append(column)
        else:
            free_text.append(column)
    return tuple(numeric), tuple(categorical), tuple(free_text)


def _missing(table: Table, columns: list[str]) -> tuple[tuple[str, int], ...]:
    counts = ((column, len(table.missing(column))) for column in columns)
    return tuple((column, count) for column, count in counts if count)


def _absent(value: Any) -> bool:
    """No value: ``None`` (an empty cell, ``null``) or NaN (a float, or the text ``nan`` in any case)."""
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and value.strip().lower() in ("nan", "-nan", "+nan"))


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, int, float)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _all_numbers(values: list[Any]) -> bool:
    try:
        np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _as_string(value: Any) -> str:
    if _absent(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order before words in alphabetical order."""
    return (0, float(value), value) if _is_number(value) else (1, 0.0, value)


def _category_name(feature: str, category: Any) -> str:
    return f"{feature}={category}"


def _short(names: Any, limit: int = 6) -> str:
    names = [str(n) for n in names]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
