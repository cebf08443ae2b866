"""The small tier: a detector fitted on the train split plus a calibrator fitted on the fit part of the held-out data.

The harness, ``cascade tune`` and the Ray Serve ``SmallDetector`` all use this one object, so the
probabilities a policy was tuned on are the ones it sees when serving. :func:`fit_small_tier` fits it
once per setting and data, cached by content hash.

>>> from cascade.config import CascadeConfig
>>> config = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}, "detector": {"kind": "tfidf-lr"}})
>>> small = SmallTier.from_config(config)
>>> small.fit(train, calibration).predict_proba(["Cheap meds, click now"]).shape   # doctest: +SKIP
(1, 2)
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

from cascade.artifact import ArtifactError
from cascade.calibration import CalibratorBase, load_calibrator, make_calibrator
from cascade.config import CascadeConfig
from cascade.data.dataset import Dataset, stratified_subsample
from cascade.data.roles import DataRoles
from cascade.detectors import DetectorBase, load_detector, make_detector
from cascade.detectors.base import Inputs
from cascade.expert_cost import PredictedExpertCost
from cascade.features import NeighbourDistance
from cascade.input_view import InputView
from cascade.paths import cache_dir
from cascade.persistence import Persistent, SavedFormat
from cascade.scoring import content_hash, dataset_hash

CHARS_PER_TOKEN = 4
"""rough characters per token, to flag texts the expert will truncate"""
SMALL_FORMAT = SavedFormat("small tier", "small.json", "cascade.small", "cascade.small.manifest")
DETECTOR_DIR, CALIBRATOR_DIR, DISTANCE_DIR, VIEW_DIR = "detector", "calibrator", "distance", "input_view"
log = logging.getLogger(__name__)


class SmallTier(Persistent):
    """Detector + calibrator (+ optional distance feature) with one ``fit`` and one saved folder.

    ``one_class`` fits the detector on the normal (label 0) training samples only;
    ``train_labels`` keeps a seeded, stratified subset of that many labelled training samples
    (the few-label setting); ``input_view`` > 0 adds that many principal components of the input
    (plus length and truncation at ``truncate_chars`` for texts) as policy features; ``expert_cost``
    adds the predicted cost of an expert call as the last feature column.

    Saved through :class:`~cascade.persistence.Persistent`: ``small.json`` and the manifest, the
    detector, calibrator and fitted features each in their own sealed folder below it.
    """

    kind = "small-tier"
    _format = SMALL_FORMAT
    _json_state = ("n_classes_",)

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

    @classmethod
    def from_config(cls, config: CascadeConfig) -> SmallTier:
        detector = make_detector(config.detector.kind, **config.detector.params)
        return cls(detector, make_calibrator(config.calibrator.kind), one_class=config.detector.one_class,
                   train_labels=config.dataset.label_budget, distance_feature=config.detector.distance_feature,
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
        self._check_fitted()
        view = 0 if self.view_ is None else self.view_.n_columns
        return self.n_classes + (self.distance_ is not None) + view + (self.expert_cost is not None)

    def fit(self, train: Dataset, calibration: Dataset) -> Self:
        """Fit the detector on (a subset of) ``train`` and the calibrator on ``calibration``."""
        if train.modality != self.detector.modality:
            raise ValueError(f"detector '{self.detector.kind}' takes {self.detector.modality} data, "
                             f"dataset '{train.name}' holds {train.modality}")
        fit_on = self.training_subset(train)
        self.detector.fit(fit_on.X, None if self.one_class else fit_on.y)
        self.calibrator.fit(self.detector.predict_proba(calibration.X), calibration.y)
        self.distance_ = (NeighbourDistance(train.modality, seed=self.seed).fit(fit_on.X)
                          if self.distance_feature else None)
        self.view_ = (InputView(train.modality, self.input_view, self.truncate_chars, self.seed).fit(fit_on.X)
                      if self.input_view else None)
        self.n_classes_ = self.detector.n_classes
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
        if self.distance_ is not None:
            columns.append(self.distance_.transform(X)[:, None])
        if self.view_ is not None:
            columns.append(self.view_.transform(X))
        if self.expert_cost is not None:
            columns.append(self.expert_cost.transform(X)[:, None])
        return columns[0] if len(columns) == 1 else np.column_stack(columns)

    def save(self, directory: str | Path) -> None:
        """Replace ``directory`` with this tier (:meth:`Persistent.save`), so no earlier part stays behind."""
        self._check_fitted()
        if Path(directory).exists():
            shutil.rmtree(directory)
        super().save(directory)

    def _saved_params(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        del params["detector"], params["calibrator"]  # saved in their own folders
        params["expert_cost"] = None if self.expert_cost is None else self.expert_cost.options()
        return params

    @classmethod
    def _from_saved_params(cls, directory: Path, params: dict[str, Any]) -> Self:
        cost = params.pop("expert_cost", None)
        return cls(load_detector(directory / DETECTOR_DIR), load_calibrator(directory / CALIBRATOR_DIR),
                   expert_cost=None if cost is None else PredictedExpertCost.from_options(cost), **params)

    def _save_extra(self, directory: Path) -> None:
        self.detector.save(directory / DETECTOR_DIR)
        self.calibrator.save(directory / CALIBRATOR_DIR)
        if self.distance_ is not None:
            self.distance_.save(directory / DISTANCE_DIR)
        if self.view_ is not None:
            self.view_.save(directory / VIEW_DIR)

    def _load_extra(self, directory: Path) -> None:
        calibrated = getattr(self.calibrator, "n_classes_", self.n_classes_)
        if not self.n_classes_ == self.detector.n_classes == calibrated:
            raise ArtifactError(f"{directory / SMALL_FORMAT.file}: fitted for {self.n_classes_} classes, the detector "
                                f"has {self.detector.n_classes}, the calibrator was fitted on {calibrated}")
        self.distance_ = NeighbourDistance.load(directory / DISTANCE_DIR) if self.distance_feature else None
        self.view_ = InputView.load(directory / VIEW_DIR) if self.input_view else None


def cost_feature(config: CascadeConfig) -> bool:
    """Whether the small tier adds the predicted expert cost: ``detector.cost_feature``, by default on for a
    learned policy."""
    chosen = config.detector.cost_feature
    return config.policy.kind == "learned" if chosen is None else chosen


def fit_small_tier(config: CascadeConfig, roles: DataRoles) -> tuple[SmallTier, float]:
    """Fit (or load from the cache) the small tier: detector on train, calibrator on the fit part; return it
    and the seconds the fit took (0 from the cache). The cache key is a content hash of the settings the
    fit reads and of the train and fit parts, under ``$CASCADE_HOME/cache/small/``."""
    small = SmallTier.from_config(config)
    expert_cost = None if small.expert_cost is None else small.expert_cost.options()
    key = content_hash("small-tier", config.detector.model_dump(), config.dataset.label_budget, config.calibrator.model_dump(),
                       config.expert.max_input_tokens, expert_cost, dataset_hash(roles.train), dataset_hash(roles.fit),
                       config.experiment.seed)
    folder = cache_dir("small") / key[:24]
    if (folder / "manifest.json").is_file():
        try:
            return SmallTier.load(folder), 0.0
        except ArtifactError as exc:  # damaged, or written in an earlier format: fit again
            log.warning("small-tier cache entry not reused, refitting: %s", exc)
    start = time.perf_counter()
    small.fit(roles.train, roles.fit)
    elapsed = time.perf_counter() - start
    small.save(folder)
    return small, elapsed
