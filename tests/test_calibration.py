"""Calibrators and calibration metrics: hand-computed cases, scikit-learn cross-checks, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss

from cascade.artifact import ArtifactError, write_manifest
from cascade.calibration import (
    CALIBRATORS,
    adaptive_ece,
    brier,
    ece,
    load_calibrator,
    make_calibrator,
    nll,
    plot_reliability,
    reliability,
)
from cascade.calibration.calibrators import CALIBRATOR_FORMAT


def overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary probabilities pushed towards 0/1: the true positive rate is ``q`` but reported as ``q**0.3``-ish."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < q).astype(int)
    logit = np.log(q / (1 - q)) * 3.0
    p = 1 / (1 + np.exp(-logit))
    return np.column_stack([1 - p, p]), y


def test_ece_of_a_hand_computed_case() -> None:
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    y = np.array([1, 0, 0, 0])
    # top-label confidences 0.9, 0.8, 0.6, 0.7 fall in four different bins; correct: 1, 0, 1, 1
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.6) + abs(1 - 0.7)) / 4
    assert ece(probs, y) == pytest.approx(expected)


def test_ece_is_zero_when_confidence_matches_accuracy_in_every_bin() -> None:
    probs = np.array([[0.75, 0.25]] * 4)
    y = np.array([0, 0, 0, 1])
    assert ece(probs, y) == pytest.approx(0.0)
    assert adaptive_ece(probs, y) == pytest.approx(0.0)


def test_adaptive_bins_hold_equal_numbers_of_samples() -> None:
    probs, y = overconfident(1500)
    bins = reliability(probs, y, n_bins=15, adaptive=True)
    assert bins.count.sum() == 1500
    assert bins.count.min() >= 90 and bins.count.max() <= 110


def test_brier_and_nll_match_scikit_learn() -> None:
    probs, y = overconfident(500)
    assert brier(probs, y) == pytest.approx(brier_score_loss(y, probs[:, 1]))
    assert nll(probs, y) == pytest.approx(log_loss(y, probs))


@pytest.mark.parametrize("kind", ["temperature", "platt", "isotonic"])
def test_calibration_lowers_ece_on_held_out_data(kind: str) -> None:
    cal_probs, cal_y = overconfident(3000, seed=1)
    test_probs, test_y = overconfident(3000, seed=2)
    calibrated = make_calibrator(kind).fit(cal_probs, cal_y).transform(test_probs)
    assert ece(calibrated, test_y) < 0.5 * ece(test_probs, test_y)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)


def test_temperature_scaling_recovers_the_temperature() -> None:
    cal_probs, cal_y = overconfident(20000, seed=3)
    assert make_calibrator("temperature").fit(cal_probs, cal_y).temperature_ == pytest.approx(3.0, rel=0.1)


def test_temperature_scaling_keeps_the_ranking() -> None:
    probs, y = overconfident(300)
    calibrated = make_calibrator("temperature").fit(probs, y).transform(probs)
    assert (np.argsort(calibrated[:, 1], kind="stable") == np.argsort(probs[:, 1], kind="stable")).all()


def test_platt_matches_scikit_learn_sigmoid_calibration(spamassassin_small: tuple) -> None:
    """Our Platt on logit(p) equals CalibratedClassifierCV(FrozenEstimator(lr), method="sigmoid")."""
    train_X, train_y, cal_X, cal_y, test_X = spamassassin_small
    model = LogisticRegression(C=0.5, max_iter=1000).fit(train_X, train_y)
    ours = make_calibrator("platt").fit(model.predict_proba(cal_X), cal_y).transform(model.predict_proba(test_X))
    theirs = CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid").fit(cal_X, cal_y).predict_proba(test_X)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_isotonic_matches_scikit_learn_isotonic_calibration(spamassassin_small: tuple) -> None:
    train_X, train_y, cal_X, cal_y, test_X = spamassassin_small
    model = LogisticRegression(C=0.5, max_iter=1000).fit(train_X, train_y)
    ours = make_calibrator("isotonic").fit(model.predict_proba(cal_X), cal_y).transform(model.predict_proba(test_X))
    theirs = CalibratedClassifierCV(FrozenEstimator(model), method="isotonic").fit(cal_X, cal_y).predict_proba(test_X)
    # same steps; scikit-learn interpolates between breakpoints in logit space, we in probability space
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


@pytest.fixture(scope="module")
def spamassassin_small(spamassassin: object) -> tuple:
    """TF-IDF rows of 1,200 real mails: 400 to train, 400 to calibrate, 400 to test."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from cascade.data.dataset import split_indices, stratified_subsample

    dataset = spamassassin.subset(stratified_subsample(spamassassin.y, spamassassin.groups, 1200, seed=0))  # type: ignore[attr-defined]
    parts = split_indices(dataset.y, dataset.groups, seed=0, train_fraction=1 / 3, calibration_fraction=1 / 3)
    texts = np.array(dataset.texts, dtype=object)
    vectorizer = TfidfVectorizer(min_df=2, sublinear_tf=True).fit(texts[parts["train"]])
    rows = {name: vectorizer.transform(texts[index]) for name, index in parts.items()}
    return rows["train"], dataset.y[parts["train"]], rows["calibration"], dataset.y[parts["calibration"]], rows["test"]


def test_multiclass_calibrators_return_distributions() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(600, 3)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=np.exp(row / 3) / np.exp(row / 3).sum()) for row in logits])
    for kind in CALIBRATORS:
        out = make_calibrator(kind).fit(probs, y).transform(probs)
        assert out.shape == (600, 3)
        np.testing.assert_allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize("kind", sorted(CALIBRATORS))
def test_save_load_round_trip(kind: str, tmp_path: object) -> None:
    probs, y = overconfident(400)
    calibrator = make_calibrator(kind).fit(probs, y)
    calibrator.save(tmp_path)
    np.testing.assert_array_equal(load_calibrator(tmp_path).transform(probs), calibrator.transform(probs))


def test_corrupt_calibrator_file_fails_with_its_name(tmp_path: object) -> None:
    probs, y = overconfident(200)
    make_calibrator("platt").fit(probs, y).save(tmp_path)
    path = tmp_path / "calibrator.json"  # type: ignore[operator]
    path.write_text(path.read_text()[:40])
    with pytest.raises(ArtifactError, match="calibrator.json"):
        load_calibrator(tmp_path)


def test_calibrator_state_of_the_wrong_kind_fails_at_load(tmp_path: object) -> None:
    probs, y = overconfident(200)
    make_calibrator("platt").fit(probs, y).save(tmp_path)
    path = tmp_path / "calibrator.json"  # type: ignore[operator]
    body = json.loads(path.read_text())
    body["kind"] = "isotonic"
    path.write_text(json.dumps(body))
    write_manifest(tmp_path, CALIBRATOR_FORMAT.manifest)
    with pytest.raises(ArtifactError, match="missing calibrator state"):
        load_calibrator(tmp_path)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="unknown calibrator kind 'beta'"):
        make_calibrator("beta")
    with pytest.raises(ValueError, match="NaN or inf"):
        make_calibrator("platt").fit(np.array([[np.nan, 1.0], [0.5, 0.5]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="fitted on 2 classes, got 3"):
        make_calibrator("platt").fit(*overconfident(50)).transform(np.full((2, 3), 1 / 3))


def test_reliability_png_is_written(tmp_path: object) -> None:
    probs, y = overconfident(500)
    path = plot_reliability(probs, y, tmp_path / "rel.png", raw_probs=probs ** 0.5 / (probs ** 0.5).sum(1, keepdims=True))  # type: ignore[operator]
    assert path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
