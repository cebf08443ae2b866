"""Small-tier detectors and the SmallTier on real SpamAssassin and shuttle subsets.

Each detector fits and predicts; calibration on the calibration split lowers ECE on the test
split; a save/load round trip gives identical probabilities; corrupt artifacts fail at load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cascade.artifact import ArtifactError
from cascade.calibration import ece
from cascade.config import CascadeConfig
from cascade.data import Dataset
from cascade.data.dataset import split_indices, stratified_subsample
from cascade.detectors import DETECTORS, MODALITY, load_detector, make_detector
from cascade.small import SmallTier

Splits = dict[str, Dataset]


def three_splits(dataset: Dataset, n: int, seed: int = 0) -> Splits:
    """A stratified ``n``-sample subset cut 50/25/25 into train / calibration / test."""
    subset = dataset.subset(stratified_subsample(dataset.y, dataset.groups, n, seed))
    parts = split_indices(subset.y, subset.groups, seed, train_fraction=0.5, calibration_fraction=0.25)
    return {name: subset.subset(index) for name, index in parts.items()}


@pytest.fixture(scope="module")
def spam(spamassassin: Dataset) -> Splits:
    return three_splits(spamassassin, 2400)


@pytest.fixture(scope="module")
def spam_small(spamassassin: Dataset) -> Splits:
    """Fewer mails for the MiniLM detectors: embedding is the slow part on a CPU."""
    return three_splits(spamassassin, 800)


@pytest.fixture(scope="module")
def rows(shuttle: Dataset) -> Splits:
    return three_splits(shuttle, 8000)


def small_tier(kind: str, calibrator: str, label_budget: int | None = None, **detector: object) -> SmallTier:
    dataset = "shuttle" if MODALITY[kind] == "features" else "spamassassin"
    config = CascadeConfig.model_validate(
        {"dataset": {"name": dataset, "label_budget": label_budget}, "detector": {"kind": kind, **detector},
         "calibrator": {"kind": calibrator}}
    )
    return SmallTier.from_config(config)


TEXT_TIERS = {
    "tfidf-lr": dict(calibrator="platt", label_budget=300),
    "tfidf-knn": dict(calibrator="isotonic", one_class=True),
    "embedding-lr": dict(calibrator="platt", label_budget=200),
    "embedding-knn": dict(calibrator="isotonic", one_class=True),
}


@pytest.fixture(scope="module")
def text_splits(spam: Splits, spam_small: Splits) -> dict[str, Splits]:
    return {kind: spam_small if kind.startswith("embedding") else spam for kind in TEXT_TIERS}


@pytest.fixture(scope="module")
def fitted_text(text_splits: dict[str, Splits]) -> dict[str, SmallTier]:
    return {kind: small_tier(kind, **options).fit(text_splits[kind]["train"], text_splits[kind]["calibration"])  # type: ignore[arg-type]
            for kind, options in TEXT_TIERS.items()}


@pytest.fixture(scope="module")
def fitted_forest(rows: Splits) -> SmallTier:
    return small_tier("isolation-forest", "isotonic", one_class=True).fit(rows["train"], rows["calibration"])


@pytest.mark.parametrize("kind", sorted(TEXT_TIERS))
def test_text_detector_ranks_spam_above_ham(kind: str, fitted_text: dict[str, SmallTier],
                                            text_splits: dict[str, Splits]) -> None:
    test = text_splits[kind]["test"]
    probs = fitted_text[kind].predict_proba(test.X)
    assert probs.shape == (len(test), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert roc_auc_score(test.y, probs[:, 1]) > (0.9 if kind.endswith("-lr") else 0.7)


def test_isolation_forest_ranks_shuttle_anomalies_above_normal_rows(fitted_forest: SmallTier, rows: Splits) -> None:
    probs = fitted_forest.predict_proba(rows["test"].X)
    assert roc_auc_score(rows["test"].y, probs[:, 1]) > 0.95


@pytest.mark.parametrize("kind", ["tfidf-lr", "tfidf-knn"])
def test_calibration_lowers_ece_on_held_out_mails(kind: str, fitted_text: dict[str, SmallTier], spam: Splits) -> None:
    tier, test = fitted_text[kind], spam["test"]
    assert ece(tier.predict_proba(test.X), test.y) < ece(tier.predict_raw(test.X), test.y)


def test_calibration_lowers_ece_of_the_isolation_forest(fitted_forest: SmallTier, rows: Splits) -> None:
    test = rows["test"]
    assert ece(fitted_forest.predict_proba(test.X), test.y) < ece(fitted_forest.predict_raw(test.X), test.y)


def test_one_class_detectors_never_see_an_anomaly(spam: Splits) -> None:
    tier = small_tier("tfidf-knn", "isotonic", one_class=True)
    assert set(tier.training_subset(spam["train"]).y.tolist()) == {0}


def test_few_label_setting_keeps_that_many_labels(spam: Splits) -> None:
    subset = small_tier("tfidf-lr", "platt", label_budget=40).training_subset(spam["train"])
    assert len(subset) == 40 and set(subset.y.tolist()) == {0, 1}


def test_tfidf_logistic_works_from_16_labels(spam: Splits) -> None:
    tier = small_tier("tfidf-lr", "platt", label_budget=16).fit(spam["train"], spam["calibration"])
    assert roc_auc_score(spam["test"].y, tier.predict_proba(spam["test"].X)[:, 1]) > 0.6


@pytest.mark.parametrize("kind", sorted(TEXT_TIERS))
def test_text_round_trip_gives_identical_probabilities(kind: str, fitted_text: dict[str, SmallTier],
                                                       text_splits: dict[str, Splits], tmp_path: Path) -> None:
    tier = fitted_text[kind]
    tier.save(tmp_path / "small")
    texts = text_splits[kind]["test"].X[:200]
    np.testing.assert_array_equal(SmallTier.load(tmp_path / "small").predict_proba(texts), tier.predict_proba(texts))


def test_forest_round_trip_gives_identical_probabilities(fitted_forest: SmallTier, rows: Splits, tmp_path: Path) -> None:
    fitted_forest.save(tmp_path)
    X = rows["test"].X
    np.testing.assert_array_equal(SmallTier.load(tmp_path).predict_proba(X), fitted_forest.predict_proba(X))


def test_distance_feature_is_an_extra_policy_column(spam_small: Splits, tmp_path: Path) -> None:
    spam = spam_small
    tier = small_tier("tfidf-lr", "platt", label_budget=200, distance_feature=True).fit(spam["train"], spam["calibration"])
    features = tier.features(spam["test"].X[:50])
    assert features.shape == (50, 3) and tier.n_classes == 2
    assert (features[:, 2] >= 0).all() and (features[:, 2] <= 2).all()
    training_mail = tier.training_subset(spam["train"]).X[0]
    assert tier.features([training_mail])[0, 2] == pytest.approx(0.0, abs=1e-4)
    tier.save(tmp_path)
    np.testing.assert_allclose(SmallTier.load(tmp_path).features(spam["test"].X[:50]), features, atol=1e-6)


def test_corrupt_detector_file_fails_at_load_naming_it(fitted_text: dict[str, SmallTier], tmp_path: Path) -> None:
    fitted_text["tfidf-lr"].save(tmp_path)
    skops = tmp_path / "detector" / "pipeline_.skops"
    skops.write_bytes(skops.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="pipeline_.skops"):
        SmallTier.load(tmp_path)


def test_tampered_file_with_fixed_checksums_still_fails_at_load(fitted_text: dict[str, SmallTier], tmp_path: Path) -> None:
    """Even with the manifests rewritten, a truncated skops file is refused when it is read."""
    from cascade.artifact import write_manifest

    fitted_text["tfidf-lr"].save(tmp_path)
    skops = tmp_path / "detector" / "pipeline_.skops"
    skops.write_bytes(skops.read_bytes()[:-100])
    write_manifest(tmp_path / "detector", "cascade.detector.manifest")
    write_manifest(tmp_path, "cascade.small.manifest")
    with pytest.raises(ArtifactError, match="pipeline_.skops"):
        SmallTier.load(tmp_path)


def test_missing_artifact_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        SmallTier.load(tmp_path / "nowhere")


def test_detector_of_another_kind_is_refused(fitted_text: dict[str, SmallTier], tmp_path: Path) -> None:
    from cascade.detectors.text import TfidfKnn

    fitted_text["tfidf-lr"].detector.save(tmp_path)
    assert load_detector(tmp_path).kind == "tfidf-lr"
    with pytest.raises(ArtifactError, match="holds a 'tfidf-lr' detector, not 'tfidf-knn'"):
        TfidfKnn.load(tmp_path)


def test_wrong_modality_is_a_clear_error(rows: Splits, spam: Splits) -> None:
    with pytest.raises(ValueError, match="takes text data, dataset 'shuttle' holds features"):
        small_tier("tfidf-lr", "platt").fit(rows["train"], rows["calibration"])
    with pytest.raises(ValueError, match="NaN or inf"):
        make_detector("pixel-lr").fit(np.array([[1.0, np.nan]] * 10), np.array([0, 1] * 5))


def test_supervised_detector_needs_labels_and_two_classes() -> None:
    with pytest.raises(ValueError, match="needs labels"):
        make_detector("tfidf-lr").fit(["a b", "c d"])
    with pytest.raises(ValueError, match="at least two classes"):
        make_detector("tfidf-lr").fit(["a b", "c d"], np.array([0, 0]))


def test_unknown_kind_and_bad_params_are_named() -> None:
    with pytest.raises(ValueError, match="unknown detector kind 'svm'"):
        make_detector("svm")
    with pytest.raises(ValueError, match="bad parameters"):
        make_detector("tfidf-lr", depth=3)
    assert {"tfidf-lr", "tfidf-knn", "embedding-lr", "embedding-knn", "isolation-forest",
            "minilm-finetune", "pixel-lr", "pixel-cnn"} <= set(DETECTORS)
