"""The in-memory dataset every loader returns, and seeded stratified splits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

Split = Literal["all", "train", "calibration", "test"]
SPLITS: tuple[str, ...] = ("all", "train", "calibration", "test")


@dataclass(frozen=True)
class Dataset:
    """Samples of one modality (texts, feature rows or images), integer labels and group tags.

    ``groups`` tags slices such as SpamAssassin's ``hard-ham-1``; ``ids`` are stable across runs.
    """

    name: str
    y: np.ndarray
    label_names: tuple[str, ...]
    ids: np.ndarray
    groups: np.ndarray
    texts: list[str] | None = None
    features: np.ndarray | None = None
    images: np.ndarray | None = None
    feature_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        payloads = [p for p in (self.texts, self.features, self.images) if p is not None]
        if len(payloads) != 1:
            raise ValueError("a Dataset holds exactly one of texts, features, images")
        n = len(self.y)
        for name, value in (("ids", self.ids), ("groups", self.groups), ("payload", payloads[0])):
            if len(value) != n:
                raise ValueError(f"{self.name}: {name} has {len(value)} rows, labels have {n}")

    @property
    def modality(self) -> str:
        return "text" if self.texts is not None else "features" if self.features is not None else "image"

    @property
    def X(self) -> list[str] | np.ndarray:
        """The payload, whatever the modality (what a detector's ``fit`` takes)."""
        if self.texts is not None:
            return self.texts
        return self.features if self.features is not None else self.images  # type: ignore[return-value]

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.y == 1)) if len(self.y) else 0.0

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> "Dataset":
        index = np.asarray(index)
        return replace(
            self,
            y=self.y[index],
            ids=self.ids[index],
            groups=self.groups[index],
            texts=[self.texts[i] for i in index] if self.texts is not None else None,
            features=self.features[index] if self.features is not None else None,
            images=self.images[index] if self.images is not None else None,
        )


def split_indices(
    y: np.ndarray,
    groups: np.ndarray,
    seed: int,
    train_fraction: float = 0.6,
    calibration_fraction: float = 0.2,
) -> dict[str, np.ndarray]:
    """Deterministic train / calibration / test indices, stratified on (label, group).

    Every (label, group) stratum is shuffled with ``seed`` and cut at the same fractions, so each
    split keeps the label and group mix of the whole set.
    """
    if not (0 < train_fraction < 1 and 0 < calibration_fraction < 1 and train_fraction + calibration_fraction < 1):
        raise ValueError("need 0 < train_fraction, calibration_fraction and their sum < 1")
    train, calibration, test = _stratified_cut(y, groups, seed, (train_fraction, calibration_fraction))
    return {"train": train, "calibration": calibration, "test": test}


def stratified_subsample(y: np.ndarray, groups: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` indices keeping the (label, group) proportions; deterministic in ``seed``."""
    if n >= len(y):
        return np.arange(len(y))
    return _stratified_cut(y, groups, seed, (n / len(y),))[0]


def _stratified_cut(
    y: np.ndarray, groups: np.ndarray, seed: int, fractions: tuple[float, ...]
) -> list[np.ndarray]:
    """Cut each (label, group) stratum at cumulative ``fractions``; the remainder is the last part."""
    rng = np.random.default_rng(seed)
    strata = np.char.add(np.asarray(y).astype(str), np.char.add("|", np.asarray(groups).astype(str)))
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        members = members[rng.permutation(len(members))]
        cuts = np.round(np.cumsum(fractions) * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts)):
            part.append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]
