"""Cross-fitting on a real shuttle subset: out-of-fold outputs are honest (no sample judged by a model that
learned from it), aligned with the labelled training samples, and cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.config import CascadeConfig
from cascade.crossfit import crossfit
from cascade.data.roles import labelled_pool
from cascade.data.roles import load_roles
from cascade.experts import make_expert
from cascade.scoring import score_expert
from cascade.small import SmallTier


@pytest.fixture
def setting(shuttle: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import cascade.scoring

    monkeypatch.setattr(cascade.scoring, "cache_dir", lambda name: tmp_path / "cache" / name)
    (tmp_path / "cache" / "scores").mkdir(parents=True)
    config = CascadeConfig.model_validate({
        "dataset": {"name": "shuttle", "max_samples": 1500},
        "detector": {"kind": "isolation-forest", "one_class": True}, "calibrator": {"kind": "isotonic"},
        "expert": {"kind": "knn-vote", "labels": ["normal", "anomaly"], "shots": 1},
    })
    roles = load_roles(config)
    return config, roles, SmallTier.from_config(config).fit(roles.train, roles.fit)


def test_out_of_fold_outputs_are_honest_and_aligned(setting) -> None:
    config, roles, small = setting
    train = roles.train
    fit = crossfit(config, roles, small, folds=4)
    assert fit.small.ids.tolist() == train.ids.tolist() and fit.small.y.tolist() == train.y.tolist()
    assert fit.experts["expert"].ids.tolist() == train.ids.tolist()
    assert fit.small.features.shape == (len(train), 2)
    # in-sample, the 1-NN vote retrieves each training row itself; out of fold it never can
    with make_expert(config.expert, pool=train) as expert:
        in_sample = score_expert(expert, train, "expert", progress=False)
    assert in_sample.correct.mean() == 1.0 and in_sample.probs.max(axis=1).min() > 0.6
    assert fit.experts["expert"].correct.mean() < 1.0
    assert not np.allclose(fit.small.probs, small.predict_proba(train.X))
    usage = fit.expert_usage["expert"]
    assert usage["calls"] == len(train) and usage["prompt_tokens"] == 0


def test_a_second_cross_fit_reads_the_expert_cache(setting) -> None:
    config, roles, small = setting
    first = crossfit(config, roles, small, folds=3)
    second = crossfit(config, roles, small, folds=3)
    np.testing.assert_array_equal(second.experts["expert"].probs, first.experts["expert"].probs)
    np.testing.assert_array_equal(second.small.probs, first.small.probs)


def test_few_label_settings_cross_fit_their_labelled_samples_only(setting) -> None:
    config, roles, _ = setting
    few = config.model_copy(update={"dataset": config.dataset.model_copy(update={"label_budget": 100})})
    pool = labelled_pool(few, roles.train)
    assert 95 <= len(pool) <= 100 and set(pool.ids) <= set(roles.train.ids)
    # a one-class detector learns from normal rows only, but every training label is known: all are cross-fitted
    assert len(labelled_pool(config, roles.train)) == len(roles.train)
    with pytest.raises(ValueError, match="at least 2 folds"):
        crossfit(config, roles, None, folds=1)


def test_the_harness_cross_fits_only_for_a_configured_learned_policy(setting, tmp_path: Path) -> None:
    import json

    from experiments.run import run_experiment

    config, roles, _ = setting
    raw = config.model_dump(mode="json")
    raw["experiment"].update(splits=3, random_seeds=2, results_dir=str(tmp_path / "results"))
    rule = run_experiment(CascadeConfig.from_dict(raw), progress=False)
    assert json.loads((rule / "results.json").read_text())["crossfit"] is None
    raw.update(name="learned", policy={"kind": "learned", "crossfit_folds": 3})
    out = run_experiment(CascadeConfig.from_dict(raw), progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["crossfit"]["samples"] == len(roles.train)
    assert results["crossfit"]["expert_usage"]["expert"]["calls"] == len(roles.train)
    assert f"{len(roles.train)} cross-fitted training samples (3 folds)" in (out / "report.md").read_text()
    fitted_on = len(roles.fit) + len(roles.train)
    assert results["scalars"]["expert"]["learned_choice"]["samples"] == fitted_on
