"""The one split loader: train / fit / certify / test never overlap, and everyone gets the same parts."""

from __future__ import annotations

import numpy as np
import pytest

from cascade import data
from cascade.config import CascadeConfig, ConfigError
from cascade.data.roles import held_out_cut, load_roles


def _config(**dataset: object) -> CascadeConfig:
    return CascadeConfig.model_validate({"dataset": {"name": "spamassassin", "max_samples": 600, **dataset}})


def test_the_four_roles_partition_the_data(spamassassin: object) -> None:
    roles = load_roles(_config())
    ids = {name: set(getattr(roles, name).ids.tolist()) for name in ("train", "fit", "certify", "test")}
    names = list(ids)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not ids[first] & ids[second], (first, second)
    everything = set(data.load("spamassassin", max_samples=600, seed=0).ids.tolist())
    assert set().union(*ids.values()) == everything
    assert abs(len(ids["fit"]) - len(ids["certify"])) <= 1


def test_certify_fraction_sets_the_certify_share_and_the_cut_is_deterministic(spamassassin: object) -> None:
    roles = load_roles(_config(certify_fraction=0.25))
    assert roles.sizes()["certify"] == pytest.approx(0.25 * len(roles.calibration), abs=2)
    again = load_roles(_config(certify_fraction=0.25))
    assert np.array_equal(roles.certify.ids, again.certify.ids)


def _unbalanced_held_out() -> data.Dataset:
    """20 samples: 3 of the rare label, two groups, so a stratified cut would favour some samples."""
    y = np.array([1, 1, 1] + [0] * 17)
    return data.Dataset(name="unbalanced", y=y, label_names=("ham", "spam"), ids=np.arange(20).astype(str),
                        groups=np.arange(20) % 2, features=np.zeros((20, 1)))


def test_the_certify_part_is_a_uniformly_random_draw_whatever_the_label_or_group() -> None:
    # every held-out sample is certified with probability certify_fraction, within 5 binomial sd: a
    # stratified cut fixes each (label, group) count (a lone rare sample in its group: never), a fixed
    # cut certifies each sample always or never
    held_out, draws, fraction = _unbalanced_held_out(), 2000, 0.5
    certified = np.zeros(len(held_out))
    rare_counts = set()
    for seed in range(draws):
        fit, certify = held_out_cut(held_out, fraction, seed=seed)
        assert len(certify) == 10 and not set(fit.tolist()) & set(certify.tolist())
        assert sorted(fit.tolist() + certify.tolist()) == list(range(len(held_out)))
        certified[certify] += 1
        rare_counts.add(int(held_out.y[certify].sum()))
    tolerance = 5 * np.sqrt(fraction * (1 - fraction) / draws)
    assert np.all(np.abs(certified / draws - fraction) < tolerance), certified / draws
    assert rare_counts == {0, 1, 2, 3}  # the rare label's count varies as a hypergeometric draw's does


def test_the_certify_draw_is_deterministic_in_the_seed() -> None:
    held_out = _unbalanced_held_out()
    first, again, other = (held_out_cut(held_out, 0.5, seed=s)[1] for s in (7, 7, 8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_a_cut_that_leaves_a_part_empty_names_the_field() -> None:
    from cascade.data import Dataset

    held_out = Dataset(name="tiny", y=np.array([0, 1, 0]), label_names=("ham", "spam"),
                       ids=np.arange(3).astype(str), groups=np.zeros(3, dtype=int), features=np.zeros((3, 1)))
    with pytest.raises(ConfigError, match="dataset.certify_fraction"):
        held_out_cut(held_out, 0.1, seed=0)


def test_certify_fraction_is_validated_at_config_load() -> None:
    with pytest.raises(ConfigError, match="dataset.certify_fraction"):
        CascadeConfig.from_dict({"dataset": {"name": "spamassassin", "certify_fraction": 1.0}})


@pytest.mark.parametrize(("certify_fraction", "cap"), [(0.5, 60), (0.5, 119), (0.25, 40), (0.75, 100)])
def test_the_harness_subsample_of_the_held_out_data_keeps_both_parts(spamassassin: object, certify_fraction: float,
                                                                       cap: int) -> None:
    # regression: one stratified draw of `cap` from fit + certify repeated the draw that cut the
    # certify part, so with cap <= |certify| the fit part got no sample at all
    from policies.held_out import held_out_evaluation_index

    roles = load_roles(_config(certify_fraction=certify_fraction))
    index = held_out_evaluation_index(roles, cap, seed=0)
    in_fit, in_certify = np.isin(index, roles.fit_index), np.isin(index, roles.certify_index)
    assert len(index) == len(set(index.tolist())) and np.all(in_fit ^ in_certify)
    share = len(roles.fit_index) / len(roles.calibration)  # each part rounds per (label, group) stratum
    assert abs(in_fit.sum() - cap * share) <= 2 and abs(in_certify.sum() - cap * (1 - share)) <= 2
    assert np.array_equal(index, held_out_evaluation_index(roles, cap, seed=0))
    assert np.array_equal(held_out_evaluation_index(roles, None, seed=0), np.arange(len(roles.calibration)))
