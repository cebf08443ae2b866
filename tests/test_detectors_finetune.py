"""MiniLMClassifier: fine-tuned once per module on 300 real SpamAssassin mails (a short CPU run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cascade.artifact import ArtifactError
from cascade.data import Dataset
from cascade.data.dataset import stratified_subsample
from cascade.detectors import load_detector, make_detector
from cascade.detectors.finetune import MiniLMClassifier

MAX_STEPS = 30
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def mails(spamassassin: Dataset) -> tuple[Dataset, Dataset]:
    """300 training and 300 held-out mails, each keeping the label and slice mix of the corpus."""
    chosen = stratified_subsample(spamassassin.y, spamassassin.groups, 600, seed=0)
    return spamassassin.subset(chosen[0::2]), spamassassin.subset(chosen[1::2])


@pytest.fixture(scope="module")
def fitted(mails: tuple[Dataset, Dataset]) -> MiniLMClassifier:
    train, _ = mails
    return MiniLMClassifier(max_steps=MAX_STEPS, max_length=MAX_LENGTH, seed=0).fit(train.texts, train.y)


@pytest.fixture(scope="module")
def held_out_proba(fitted: MiniLMClassifier, mails: tuple[Dataset, Dataset]) -> np.ndarray:
    return fitted.predict_proba(mails[1].texts)


@pytest.fixture(scope="module")
def saved(fitted: MiniLMClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("minilm") / "detector"
    fitted.save(directory)
    return directory


def test_registry_builds_it_by_kind() -> None:
    detector = make_detector("minilm-finetune", max_steps=5)
    assert isinstance(detector, MiniLMClassifier) and detector.max_steps == 5


def test_fit_without_labels_is_refused(mails: tuple[Dataset, Dataset]) -> None:
    with pytest.raises(ValueError, match="needs labels"):
        MiniLMClassifier().fit(mails[0].texts[:8])


def test_fit_learns_the_classes(fitted: MiniLMClassifier) -> None:
    assert fitted.classes_.tolist() == [0, 1]
    assert fitted.model_.config.id2label == {0: "0", 1: "1"}


def test_probabilities_are_one_distribution_per_mail(held_out_proba: np.ndarray) -> None:
    assert held_out_proba.shape == (300, 2) and held_out_proba.dtype == np.float64
    np.testing.assert_allclose(held_out_proba.sum(axis=1), 1.0, atol=1e-12)
    assert (held_out_proba >= 0).all()


def test_ranks_held_out_spam_above_ham(held_out_proba: np.ndarray, mails: tuple[Dataset, Dataset]) -> None:
    assert roc_auc_score(mails[1].y, held_out_proba[:, 1]) > 0.9


def test_save_load_round_trip_gives_identical_probabilities(
    saved: Path, held_out_proba: np.ndarray, mails: tuple[Dataset, Dataset]
) -> None:
    loaded = load_detector(saved)
    assert isinstance(loaded, MiniLMClassifier) and loaded.max_length == MAX_LENGTH
    assert loaded.classes_.tolist() == [0, 1]
    np.testing.assert_allclose(loaded.predict_proba(mails[1].texts[:32]), held_out_proba[:32], atol=1e-6)


def test_saved_model_folder_is_a_transformers_pipeline(
    saved: Path, held_out_proba: np.ndarray, mails: tuple[Dataset, Dataset]
) -> None:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(saved / "model"), device="cpu")
    scored = classify(mails[1].texts[:16], top_k=None, truncation=True)
    spam = np.array([{entry["label"]: entry["score"] for entry in mail}["1"] for mail in scored])
    np.testing.assert_allclose(spam, held_out_proba[:16, 1], atol=1e-5)


def test_pipeline_method_scores_like_predict_proba(
    fitted: MiniLMClassifier, held_out_proba: np.ndarray, mails: tuple[Dataset, Dataset]
) -> None:
    scored = fitted.pipeline()(mails[1].texts[:8])
    ham = np.array([{entry["label"]: entry["score"] for entry in mail}["0"] for mail in scored])
    np.testing.assert_allclose(ham, held_out_proba[:8, 0], atol=1e-5)


def test_corrupt_weights_fail_at_load_naming_the_file(saved: Path, tmp_path: Path) -> None:
    copy = tmp_path / "detector"
    shutil.copytree(saved, copy)
    weights = copy / "model" / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(weights.stat().st_size // 2)
        handle.write(b"\x00corrupt\x00")
    with pytest.raises(ArtifactError, match="model.safetensors"):
        MiniLMClassifier.load(copy)
