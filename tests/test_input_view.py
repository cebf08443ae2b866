"""The input view: principal components of the input that a learned policy can use to see *where* a sample lies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cascade import data
from cascade.config import CascadeConfig
from cascade.data.dataset import split_indices, stratified_subsample
from cascade.input_view import InputView
from cascade.persistence import NotFittedError
from cascade.small import SmallTier


@pytest.fixture(scope="module")
def fashion() -> dict[str, data.Dataset]:
    data.fetch("fashion-mnist", progress=False)
    everything = data.load("fashion-mnist")
    subset = everything.subset(stratified_subsample(everything.y, everything.groups, 3000, 0))
    parts = split_indices(subset.y, subset.groups, 0, train_fraction=0.5, calibration_fraction=0.25)
    return {name: subset.subset(index) for name, index in parts.items()}


def test_feature_view_keeps_the_leading_directions_of_the_standardised_columns(shuttle: data.Dataset) -> None:
    rows = shuttle.features[np.random.default_rng(0).permutation(len(shuttle))[:3000]]
    view = InputView("features", components=3).fit(rows)
    projected = view.transform(rows)
    assert projected.shape == (3000, 3)
    standard = (rows - rows.mean(0)) / np.where(rows.std(0) > 0, rows.std(0), 1.0)
    top_three = np.sort(np.linalg.eigvalsh(np.cov(standard.T, bias=True)))[::-1][:3]
    np.testing.assert_allclose(projected.var(axis=0), top_three, rtol=1e-6)


def test_image_view_tells_upper_body_garments_from_the_rest(fashion: dict[str, data.Dataset]) -> None:
    """What a specialist-aware policy needs: the view alone separates the sub-population."""
    tops = ("t-shirt", "pullover", "coat", "shirt")
    view = InputView("image", components=8).fit(fashion["train"].images)
    model = LogisticRegression(max_iter=1000).fit(view.transform(fashion["train"].images),
                                                  np.isin(fashion["train"].groups, tops))
    held_out = model.score(view.transform(fashion["test"].images), np.isin(fashion["test"].groups, tops))
    assert held_out > 0.9


def test_text_view_adds_length_and_truncation(spamassassin: data.Dataset) -> None:
    texts = spamassassin.texts[:300]
    view = InputView("text", components=4, truncate_chars=1536).fit(texts[:200])
    columns = view.transform(texts[200:])
    assert columns.shape == (100, 6) and view.n_columns == 6
    chars = np.array([len(t) for t in texts[200:]])
    np.testing.assert_allclose(columns[:, 4], np.log1p(chars))
    np.testing.assert_array_equal(columns[:, 5], chars > 1536)


def test_unfitted_view_and_bad_settings_say_so() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        InputView("image").transform(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="components must be at least 1"):
        InputView("image", components=0)
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        InputView("audio")


def test_small_tier_appends_the_view_and_saves_it(fashion: dict[str, data.Dataset], tmp_path: Path) -> None:
    config = CascadeConfig.model_validate({"dataset": {"name": "fashion-mnist"},
                                           "detector": {"kind": "pixel-lr", "input_view": 5, "distance_feature": True},
                                           "expert": {"kind": "cnn", "labels": ["normal", "anomaly"]}})
    tier = SmallTier.from_config(config).fit(fashion["train"], fashion["calibration"])
    images = fashion["test"].images[:40]
    features = tier.features(images)
    assert features.shape == (40, 2 + 1 + 5)
    np.testing.assert_allclose(features[:, :2], tier.predict_proba(images))
    tier.save(tmp_path)
    np.testing.assert_allclose(SmallTier.load(tmp_path).features(images), features, atol=1e-6)
