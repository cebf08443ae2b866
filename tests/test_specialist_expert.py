"""A specialist expert: `expert.pool_groups` keeps only some groups of the labelled pool.

The shipped Fashion-MNIST specialist config (shirts and sandals are the anomalies) builds a CNN from
the tops of its train split: it learns to tell shirts from the other tops and never learns sandals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cascade import data
from cascade.config import CascadeConfig, ExpertConfig
from cascade.data.roles import DataRoles, load_roles
from cascade.experts import make_expert
from cascade.experts.result import ExpertResult

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
FOOTWEAR = ["sandal", "sneaker", "ankle-boot"]


@pytest.fixture(scope="module")
def specialist() -> CascadeConfig:
    data.fetch("fashion-mnist", progress=False)
    return CascadeConfig.from_yaml(CONFIGS / "fashion-mnist-specialist.yaml")


@pytest.fixture(scope="module")
def roles(specialist: CascadeConfig) -> DataRoles:
    return load_roles(specialist)


@pytest.fixture(scope="module")
def judged_test_split(specialist: CascadeConfig, roles: DataRoles,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExpertResult]:
    """The shipped config's expert, built on its train split (on a cold CNN cache), judging the test split."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASCADE_HOME", str(tmp_path_factory.mktemp("cascade-home")))
        with make_expert(specialist.expert, cost=specialist.cost, pool=roles.train) as expert:
            yield expert.judge(roles.test.images)


def _auroc(roles: DataRoles, judged: ExpertResult, groups: list[str]) -> float:
    among = np.isin(roles.test.groups, groups)
    return float(roc_auc_score(roles.test.y[among], judged.probs[among, 1]))


def test_the_shipped_specialist_tells_shirts_from_the_other_tops(specialist: CascadeConfig, roles: DataRoles,
                                                                 judged_test_split: ExpertResult) -> None:
    assert _auroc(roles, judged_test_split, list(specialist.expert.pool_groups or [])) > 0.8


def test_the_shipped_specialist_cannot_tell_sandals_from_other_shoes(roles: DataRoles,
                                                                     judged_test_split: ExpertResult) -> None:
    """It never saw a shoe (a CNN trained on the whole train split ranks sandals first at AUROC 0.99)."""
    assert _auroc(roles, judged_test_split, FOOTWEAR) < 0.7


def test_pool_groups_restrict_what_the_expert_learns_from(shuttle) -> None:
    rows = shuttle.subset(np.arange(3000))
    normal_only = ExpertConfig(kind="knn-vote", labels=["normal", "anomaly"], shots=3, pool_groups=["normal"])
    with make_expert(normal_only, pool=rows) as expert:
        assert set(expert.retriever.labels.tolist()) == {0}
        assert expert.judge(rows.X[rows.y == 1][:20]).probs.argmax(1).tolist() == [0] * 20
    everything = ExpertConfig(kind="knn-vote", labels=["normal", "anomaly"], shots=3)
    with make_expert(everything, pool=rows) as expert:
        assert expert.judge(rows.X[rows.y == 1][:20]).probs.argmax(1).mean() > 0.9


def test_pool_groups_that_keep_nothing_are_named(shuttle) -> None:
    config = ExpertConfig(kind="knn-vote", labels=["normal", "anomaly"], shots=3, pool_groups=["shirt"])
    with pytest.raises(ValueError, match=r"expert.pool_groups \['shirt'\] keeps no training sample"):
        make_expert(config, pool=shuttle.subset(np.arange(100)))
