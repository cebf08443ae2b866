"""What a named dataset module declares about itself, and the error for one not fetched yet.

Dataset modules import from here and never from the registry, so registration runs one way:
:mod:`cascade.data.registry` imports each module and lists its ``SOURCE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cascade.data.dataset import Dataset


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset: its modality, class names, where it comes from and how to fetch and load it."""

    name: str
    modality: str
    label_names: tuple[str, ...]
    description: str
    origin: str
    fetch: Callable[..., Path]
    load: Callable[..., Dataset]


class DatasetMissing(FileNotFoundError):
    """A dataset has not been fetched yet; the message carries the command that fetches it."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(f"dataset '{name}' is not available at {path}. Fetch it with: cascade data fetch {name}")
        self.name = name
