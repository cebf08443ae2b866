"""Export the decision log (:meth:`cascade.decision_log.DecisionLog.export`): CSV or Parquet, in chunks."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from cascade.decision_log import Decision

EXPORT_COLUMNS = [f.name for f in fields(Decision)] + ["true_label", "received"]


def write_csv(path: Path, chunks: Iterator[list[Any]]) -> int:
    count = 0
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for chunk in chunks:
            writer.writerows(chunk)
            count += len(chunk)
    return count


def write_parquet(path: Path, chunks: Iterator[list[Any]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"str": pa.string(), "float": pa.float64(), "bool": pa.bool_(), "Tier": pa.string()}
    annotations = {f.name: str(f.type).removesuffix(" | None") for f in fields(Decision)}
    annotations.update(true_label="str", received="float", probabilities="list")
    schema = pa.schema([(name, types.get(annotations[name], pa.list_(pa.float64()))) for name in EXPORT_COLUMNS])
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in chunks:
            rows = [{**row, "probabilities": json.loads(row["probabilities"])} for row in chunk]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            count += len(rows)
    return count
