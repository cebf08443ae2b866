"""Cross-fitting on a real SpamAssassin subset: out-of-fold outputs are honest (no sample judged by a model that
learned from it), aligned with the labelled training samples, and cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.config import CascadeConfig
from cascade.experts import make_expert
from cascade.small import SmallTier
from experiments.crossfit import crossfit, labelled_pool
from experiments.run import load_experiment_splits
from experiments.scoring import score_expert


@pytest.fixture
def setting(spamassassin: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import experiments.scoring

    monkeypatch.setattr(experiments.scoring, "cache_dir", lambda name: tmp_path / "cache" / name)
    (tmp_path / "cache" / "scores").mkdir(parents=True)
    config = CascadeConfig.model_validate({
        "dataset": {"name": "spamassassin", "max_samples": 700},
        "detector": {"kind": "tfidf-lr"}, "calibrator": {"kind": "platt"},
        "expert": {"kind": "knn-vote", "labels": ["ham", "spam"], "shots": 1},
    })
    splits = load_experiment_splits(config)
    return config, splits, SmallTier.from_config(config).fit(splits["train"], splits["calibration"])


def test_out_of_fold_outputs_are_honest_and_aligned(setting) -> None:
    config, splits, small = setting
    train = splits["train"]
    fit = crossfit(config, splits, small, folds=4)
    assert fit.small.ids.tolist() == train.ids.tolist() and fit.small.y.tolist() == train.y.tolist()
    assert fit.experts["expert"].ids.tolist() == train.ids.tolist()
    assert fit.small.features.shape == (len(train), 2)
    # in-sample, the detector has memorised its training mails and the 1-NN vote retrieves each mail itself
    in_sample_small = (small.predict_proba(train.X).argmax(1) == train.y).mean()
    with make_expert(config.expert, pool=train) as expert:
        in_sample_expert = score_expert(expert, train, "expert", progress=False).correct.mean()
    assert in_sample_small > fit.small.correct.mean() and in_sample_expert == 1.0
    assert fit.experts["expert"].correct.mean() < 0.99
    usage = fit.expert_usage["expert"]
    assert usage["calls"] == len(train) and usage["prompt_tokens"] == 0


def test_a_second_cross_fit_reads_the_expert_cache(setting) -> None:
    config, splits, small = setting
    first = crossfit(config, splits, small, folds=3)
    second = crossfit(config, splits, small, folds=3)
    np.testing.assert_array_equal(second.experts["expert"].probs, first.experts["expert"].probs)
    np.testing.assert_array_equal(second.small.probs, first.small.probs)


def test_few_label_settings_cross_fit_their_labelled_samples_only(setting) -> None:
    config, splits, _ = setting
    few = config.model_copy(update={"detector": config.detector.model_copy(update={"train_labels": 100})})
    pool = labelled_pool(few, splits["train"])
    assert pool.ids.tolist() == SmallTier.from_config(few).training_subset(splits["train"]).ids.tolist()
    assert 95 <= len(pool) <= 100
    with pytest.raises(ValueError, match="at least 2 folds"):
        crossfit(config, splits, None, folds=1)
