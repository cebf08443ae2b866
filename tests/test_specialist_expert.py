"""A specialist expert: `expert.pool_groups` keeps only some groups of the labelled pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.config import CascadeConfig, ExpertConfig
from cascade.experts import make_expert

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def test_the_shipped_specialist_config_trains_its_expert_on_tops_only() -> None:
    config = CascadeConfig.from_yaml(CONFIGS / "fashion-mnist-specialist.yaml")
    assert config.expert.pool_groups == ["t-shirt", "pullover", "coat", "shirt"]
    assert config.policy.kind == "learned" and config.detector.input_view == 8


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
