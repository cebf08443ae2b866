"""The one config-driven split loader: train / fit / certify / test, never overlapping.

* ``train``: the detector learns here;
* ``fit``: the calibrator and any learned deferral policy are fitted here;
* ``certify``: a budget tuner picks the threshold and writes its certificate here. Split-conformal
  and Learn-then-Test guarantees need certification scores exchangeable with serving scores, so
  nothing that produces those scores may have been fitted on these samples;
* ``test``: touched only to report.

``certify`` is a uniformly random draw of ``dataset.certify_fraction`` of the held-out
(``calibration``) split and ``fit`` the rest (:func:`held_out_cut`). The harness, ``cascade tune``,
the demo and the Serve app all call :func:`load_roles`, so they agree sample for sample.

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
    """``(fit, certify)`` sorted indices into ``held_out``; certify is a uniformly random subset.

    Every subset of ``round(certify_fraction · n)`` samples is equally likely (one seeded
    permutation, cut once; deterministic in ``seed``), so the certify samples are an exchangeable
    draw of the held-out data, as split-conformal and Learn-then-Test need. A cut stratified on
    (label, group) is not: it fixes each stratum's (rounded) count, so how often a sample is
    certified depends on its label and group.

    >>> import numpy as np
    >>> from cascade.data import Dataset
    >>> held_out = Dataset(name="toy", y=np.array([0, 0, 0, 1]), label_names=("ham", "spam"),
    ...                    ids=np.arange(4).astype(str), groups=np.zeros(4, dtype=int), features=np.zeros((4, 1)))
    >>> fit, certify = held_out_cut(held_out, 0.5, seed=0)
    >>> len(certify), sorted(fit.tolist() + certify.tolist())
    (2, [0, 1, 2, 3])
    """
    n_certify = int(round(certify_fraction * len(held_out)))
    if not 0 < n_certify < len(held_out):
        raise ConfigError(f"dataset.certify_fraction: {certify_fraction} of {len(held_out)} held-out samples "
                          "leaves the fit or the certify part empty")
    order = np.random.default_rng(seed).permutation(len(held_out))
    return np.sort(order[n_certify:]), np.sort(order[:n_certify])


def labelled_pool(config: CascadeConfig, train: Dataset) -> Dataset:
    """The training samples whose labels the setting may use: all of them, or the seeded, stratified
    ``dataset.label_budget`` of them. Everything that reads training labels reads these: the detector
    (:class:`cascade.small.SmallTier` draws the same subset), the expert's retrieved examples and the
    kNN vote (harness, ``cascade tune`` and Serve), and cross-fitting."""
    labels = config.dataset.label_budget
    if labels is None or labels >= len(train):
        return train
    return train.subset(stratified_subsample(train.y, train.groups, labels, config.experiment.seed))


def load_roles(config: CascadeConfig) -> DataRoles:
    """Load the config's dataset once and cut it into train / fit / certify / test."""
    dataset = config.dataset
    seed = config.experiment.seed
    splits = load_splits(dataset.name, seed=seed, train_fraction=dataset.train_fraction,
                         calibration_fraction=dataset.held_out_fraction, max_samples=dataset.max_samples,
                         **dataset.loader_options())
    fit, certify = held_out_cut(splits["calibration"], dataset.certify_fraction, seed)
    return DataRoles(train=splits["train"], calibration=splits["calibration"], fit_index=fit, certify_index=certify,
                     test=splits["test"])
