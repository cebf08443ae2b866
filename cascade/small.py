"""The small tier: a detector fitted on the train split plus a calibrator fitted on the fit part of the held-out data.

The harness, ``cascade tune`` and the Ray Serve ``SmallDetector`` all use this one object, so the
probabilities a policy was tuned on are the ones it sees when serving.

>>> from cascade.config import CascadeConfig
>>> config = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}, "detector": {"kind": "tfidf-lr"}})
>>> small = SmallTier.from_config(config)
>>> small.fit(train, calibration).predict_proba(["Cheap meds, click now"]).shape   # doctest: +SKIP
(1, 2)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Self

import numpy as np

from cascade.artifact import (
    ArtifactError,
    load_arrays,
    read_json,
    verify_manifest,
    write_json,
    write_manifest,
)
from cascade.calibration import CalibratorBase, load_calibrator, make_calibrator
from cascade.config import CascadeConfig
from cascade.data.dataset import Dataset, stratified_subsample
from cascade.detectors import DetectorBase, load_detector, make_detector
from cascade.detectors.base import Inputs
from cascade.expert_cost import PredictedExpertCost
from cascade.features import NeighbourDistance
from cascade.input_view import InputView
from cascade.persistence import NotFittedError, check_fitted

CHARS_PER_TOKEN = 4
"""rough characters per token, to flag texts the expert will truncate"""
SMALL_FILE = "small.json"
LEGACY_DISTANCE_FILE = "distance.safetensors"


class SmallTier:
    """Detector + calibrator (+ optional distance feature) with one ``fit`` and one saved folder.

    ``one_class`` fits the detector on the normal (label 0) training samples only;
    ``train_labels`` keeps a seeded, stratified subset of that many labelled training samples
    (the few-label setting); ``input_view`` > 0 adds that many principal components of the input
    (plus length and truncation at ``truncate_chars`` for texts) as policy features; ``expert_cost``
    adds the predicted cost of an expert call as the last feature column.
    """

    def __init__(self, detector: DetectorBase, calibrator: CalibratorBase, one_class: bool = False,
                 train_labels: int | None = None, distance_feature: bool = False, seed: int = 0,
                 input_view: int = 0, truncate_chars: int | None = None,
                 expert_cost: PredictedExpertCost | None = None) -> None:
        self.detector = detector
        self.calibrator = calibrator
        self.one_class = one_class or detector.one_class
        self.train_labels = train_labels
        self.distance_feature = distance_feature
        self.seed = seed
        self.input_view = input_view
        self.truncate_chars = truncate_chars
        self.expert_cost = expert_cost
        self.distance: NeighbourDistance | None = None
        self.view: InputView | None = None
        self.fitted_ = False

    @classmethod
    def from_config(cls, config: CascadeConfig) -> SmallTier:
        detector = make_detector(config.detector.kind, **config.detector.params)
        return cls(detector, make_calibrator(config.calibrator.kind), one_class=config.detector.one_class,
                   train_labels=config.detector.train_labels, distance_feature=config.detector.distance_feature,
                   seed=config.experiment.seed, input_view=config.detector.input_view,
                   truncate_chars=config.expert.max_input_tokens * CHARS_PER_TOKEN,
                   expert_cost=PredictedExpertCost.from_config(config) if cost_feature(config) else None)

    @property
    def n_classes(self) -> int:
        """How many leading columns of :meth:`features` are class probabilities."""
        return self.detector.n_classes

    @property
    def n_features(self) -> int:
        """How many columns :meth:`features` returns (what a policy fitted on them expects)."""
        view = 0 if self.view is None else self.view.n_columns
        return self.n_classes + (self.distance is not None) + view + (self.expert_cost is not None)

    def fit(self, train: Dataset, calibration: Dataset) -> Self:
        """Fit the detector on (a subset of) ``train`` and the calibrator on ``calibration``."""
        if train.modality != self.detector.modality:
            raise ValueError(f"detector '{self.detector.kind}' takes {self.detector.modality} data, "
                             f"dataset '{train.name}' holds {train.modality}")
        fit_on = self.training_subset(train)
        self.detector.fit(fit_on.X, None if self.one_class else fit_on.y)
        self.calibrator.fit(self.detector.predict_proba(calibration.X), calibration.y)
        if self.distance_feature:
            self.distance = NeighbourDistance(train.modality, seed=self.seed).fit(fit_on.X)
        if self.input_view:
            self.view = InputView(train.modality, self.input_view, self.truncate_chars, self.seed).fit(fit_on.X)
        self.fitted_ = True
        return self

    def training_subset(self, train: Dataset) -> Dataset:
        """The samples the detector learns from: normals only for one-class, ``train_labels`` of them if set."""
        if self.one_class:
            train = train.subset(np.flatnonzero(train.y == 0))
        if self.train_labels is not None and self.train_labels < len(train):
            train = train.subset(stratified_subsample(train.y, train.groups, self.train_labels, self.seed))
        if len(train) == 0:
            raise ValueError("no training samples left (one_class keeps label 0 only)")
        return train

    def predict_raw(self, X: Inputs) -> np.ndarray:
        """The detector's uncalibrated probabilities ``(n, k)``."""
        self._check_fitted()
        return self.detector.predict_proba(X)

    def predict_proba(self, X: Inputs) -> np.ndarray:
        """Calibrated probabilities ``(n, k)``."""
        return self.calibrator.transform(self.predict_raw(X))

    def features(self, X: Inputs) -> np.ndarray:
        """What policies see: calibrated probabilities, then (if enabled) the distance to the training data,
        the input view and the predicted cost of an expert call."""
        columns = [self.predict_proba(X)]
        if self.distance is not None:
            columns.append(self.distance.transform(X)[:, None])
        if self.view is not None:
            columns.append(self.view.transform(X))
        if self.expert_cost is not None:
            columns.append(self.expert_cost.transform(X)[:, None])
        return columns[0] if len(columns) == 1 else np.column_stack(columns)

    def save(self, directory: str | Path) -> None:
        """Write ``detector/``, ``calibrator/``, ``small.json`` and a manifest over all of them."""
        self._check_fitted()
        directory = Path(directory)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        self.detector.save(directory / "detector")
        self.calibrator.save(directory / "calibrator")
        options = {"one_class": self.one_class, "train_labels": self.train_labels,
                   "distance_feature": self.distance_feature, "seed": self.seed,
                   "input_view": self.input_view, "truncate_chars": self.truncate_chars,
                   "expert_cost": None if self.expert_cost is None else self.expert_cost.options()}
        if self.distance is not None:
            self.distance.save(directory / "distance")
        if self.view is not None:
            self.view.save(directory / "input_view")
        write_json(directory / SMALL_FILE, "cascade.small", options)
        write_manifest(directory, "cascade.small.manifest", {"detector": self.detector.kind,
                                                              "calibrator": self.calibrator.kind})

    @classmethod
    def load(cls, directory: str | Path) -> SmallTier:
        """Load and check a saved small tier; any missing, corrupt or edited file raises ``ArtifactError``."""
        directory = Path(directory)
        verify_manifest(directory, "cascade.small.manifest")
        options: dict[str, Any] = read_json(directory / SMALL_FILE, "cascade.small")
        small = cls(load_detector(directory / "detector"), load_calibrator(directory / "calibrator"),
                    one_class=bool(options.get("one_class")), train_labels=options.get("train_labels"),
                    distance_feature=bool(options.get("distance_feature")), seed=int(options.get("seed", 0)),
                    input_view=int(options.get("input_view", 0)), truncate_chars=options.get("truncate_chars"),
                    expert_cost=None if options.get("expert_cost") is None
                    else PredictedExpertCost.from_options(options["expert_cost"]))
        if small.detector.n_classes != getattr(small.calibrator, "n_classes_", small.detector.n_classes):
            raise ArtifactError(f"{directory}: detector has {small.detector.n_classes} classes, "
                                f"calibrator was fitted on {small.calibrator.n_classes_}")  # type: ignore[attr-defined]
        if small.distance_feature:
            small.distance = _load_distance(directory, options, small)
        if small.input_view:
            small.view = InputView.load(directory / "input_view")
        small.fitted_ = True
        return small

    def _check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError("SmallTier is not fitted; call fit(train, calibration) first")


def cost_feature(config: CascadeConfig) -> bool:
    """Whether the small tier adds the predicted expert cost: ``detector.cost_feature``, by default on for a
    learned policy."""
    chosen = config.detector.cost_feature
    return config.policy.kind == "learned" if chosen is None else chosen


def _load_distance(directory: Path, options: dict[str, Any], small: SmallTier) -> NeighbourDistance:
    """The distance feature: its own folder, or the bare arrays file small tiers held before it had one."""
    if (directory / "distance").is_dir():
        return NeighbourDistance.load(directory / "distance")
    arrays = load_arrays(directory / LEGACY_DISTANCE_FILE)
    distance = NeighbourDistance(options.get("distance_modality", small.detector.modality), seed=small.seed)
    for name, values in arrays.items():
        setattr(distance, f"{name}_", values)
    check_fitted(distance, ["reference_"])
    return distance
