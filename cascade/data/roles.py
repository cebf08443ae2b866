"""The one config-driven split loader: train / fit / certify / test, never overlapping.

* ``train``: the detector learns here;
* ``fit``: the calibrator and any learned deferral policy are fitted here;
* ``certify``: a budget tuner picks the threshold and writes its certificate here. Split-conformal
  and Learn-then-Test guarantees need certification scores exchangeable with serving scores, so
  nothing that produces those scores may have been fitted on these samples;
* ``test``: touched only to report.

``fit`` and ``certify`` are a stratified cut of the held-out (``calibration``) split at
``dataset.certify_fraction``. The harness, ``cascade tune``, the demo and the Serve app all call
:func:`load_roles`, so they agree sample for sample.

>>> from cascade.config import CascadeConfig
>>> roles = load_roles(CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}}))  # doctest: +SKIP
>>> sorted(roles.sizes())  # doctest: +SKIP
['certify', 'fit', 'test', 'train']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cascade.config import CascadeConfig, ConfigError
from cascade.data.dataset import Dataset, stratified_subsample
from cascade.data.registry import load_splits

ROLES = ("train", "fit", "certify", "test")


@dataclass(frozen=True)
class DataRoles:
    """The four parts; ``fit_index`` and ``certify_index`` index into ``calibration`` (fit ∪ certify)."""

    train: Dataset
    calibration: Dataset
    fit_index: np.ndarray
    certify_index: np.ndarray
    test: Dataset

    @property
    def fit(self) -> Dataset:
        return self.calibration.subset(self.fit_index)

    @property
    def certify(self) -> Dataset:
        return self.calibration.subset(self.certify_index)

    def sizes(self) -> dict[str, int]:
        """Samples per role."""
        return {"train": len(self.train), "fit": len(self.fit_index), "certify": len(self.certify_index),
                "test": len(self.test)}


def held_out_cut(held_out: Dataset, certify_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, certify)`` indices into ``held_out``, stratified on (label, group), deterministic in ``seed``."""
    n_certify = int(round(certify_fraction * len(held_out)))
    if not 0 < n_certify < len(held_out):
        raise ConfigError(f"dataset.certify_fraction: {certify_fraction} of {len(held_out)} held-out samples "
                          "leaves the fit or the certify part empty")
    certify = np.sort(stratified_subsample(held_out.y, held_out.groups, n_certify, seed))
    fit = np.setdiff1d(np.arange(len(held_out)), certify)
    return fit, certify


def load_roles(config: CascadeConfig) -> DataRoles:
    """Load the config's dataset once and cut it into train / fit / certify / test."""
    dataset = config.dataset
    seed = config.experiment.seed
    splits = load_splits(dataset.name, seed=seed, train_fraction=dataset.train_fraction,
                         calibration_fraction=dataset.calibration_fraction, max_samples=dataset.max_samples,
                         **dataset.loader_options())
    fit, certify = held_out_cut(splits["calibration"], dataset.certify_fraction, seed)
    return DataRoles(train=splits["train"], calibration=splits["calibration"], fit_index=fit, certify_index=certify,
                     test=splits["test"])
