"""Ray Data scoring (``map_batches`` with one expert per actor) gives the same scores as local scoring."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.config import ExpertConfig
from cascade.data import Dataset
from cascade.data.dataset import stratified_subsample
from cascade.experts import make_expert
from cascade.scoring import score_expert, score_with_ray_data

pytestmark = pytest.mark.integration


def test_ray_data_scoring_matches_local_scoring(spamassassin: Dataset) -> None:
    import ray

    in_pool = stratified_subsample(spamassassin.y, spamassassin.groups, 600, seed=1)
    pool = spamassassin.subset(in_pool)
    held_out = spamassassin.subset(np.setdiff1d(np.arange(len(spamassassin)), in_pool)[:48])
    config = ExpertConfig(kind="knn-vote", labels=["ham", "spam"], shots=4)

    def new_expert():  # type: ignore[no-untyped-def]
        return make_expert(config, pool=pool)

    with new_expert() as expert:
        local = score_expert(expert, held_out, "control", progress=False)
    try:
        distributed = score_with_ray_data(new_expert, held_out, "control", batch_size=16, num_cpus=0.5)
    finally:
        ray.shutdown()
    np.testing.assert_allclose(distributed.probs, local.probs, atol=1e-6)
    np.testing.assert_array_equal(distributed.ids, local.ids)
    np.testing.assert_array_equal(distributed.cost, local.cost)
    assert distributed.meta == local.meta
