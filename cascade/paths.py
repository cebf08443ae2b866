"""Where cascade keeps fetched data, converted models and caches.

Everything lives under one home directory, ``$CASCADE_HOME`` (default ``~/.cache/cascade``)::

    $CASCADE_HOME/data/<dataset>/...
    $CASCADE_HOME/models/<model>/...
    $CASCADE_HOME/cache/...          (embedding and scoring caches)
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cascade home directory (created on first use)."""
    root = Path(os.environ.get("CASCADE_HOME") or Path.home() / ".cache" / "cascade").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_dir(name: str | None = None) -> Path:
    root = home() / "data"
    return root / name if name else root


def models_dir(name: str | None = None) -> Path:
    root = home() / "models"
    return root / name if name else root


def cache_dir(name: str | None = None) -> Path:
    root = home() / "cache"
    path = root / name if name else root
    path.mkdir(parents=True, exist_ok=True)
    return path
