"""Image detectors and the CNN expert on a real Fashion-MNIST subset (shirt = anomaly).

Both detectors fit and predict; the CNN ranks shirts above the other clothes better than the
linear detector on the same held-out split (the premise of the Fashion-MNIST experiment); a
save/load round trip gives identical probabilities; corrupt weights fail at load naming the file;
``make_expert`` with kind ``cnn`` trains the CNN once on the pool and then loads it from the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cascade import data
from cascade.artifact import ArtifactError, write_manifest
from cascade.config import ExpertConfig
from cascade.detectors import load_detector
from cascade.detectors.base import DetectorBase
from cascade.detectors.image import WEIGHTS_FILE, PixelCNN, PixelLogistic
from cascade.experts import ExpertError, ExpertResult, make_expert
from cascade.experts.image import CnnExpert
from cascade.types import CostModel

SUBSET = 10_000  # 6,000 train / 2,000 calibration / 2,000 test images, 10% shirts
LABELS = ["normal", "anomaly"]
COST = CostModel(expert_per_call=2.5)


@pytest.fixture(scope="module")
def fashion() -> dict[str, data.Dataset]:
    data.fetch("fashion-mnist", progress=False)
    return data.load_splits("fashion-mnist", seed=0, max_samples=SUBSET)


@pytest.fixture(scope="module")
def fitted(fashion: dict[str, data.Dataset]) -> dict[str, DetectorBase]:
    train = fashion["train"]
    return {"pixel-lr": PixelLogistic().fit(train.images, train.y), "pixel-cnn": PixelCNN().fit(train.images, train.y)}


@pytest.fixture(scope="module")
def cascade_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty cascade home, so the expert cache starts cold."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("cascade-home")
        patch.setenv("CASCADE_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def trained_expert(fashion: dict[str, data.Dataset], cascade_home: Path) -> CnnExpert:
    """The cnn expert built on a cold cache (its CNN trained on the pool)."""
    expert = make_expert(ExpertConfig(kind="cnn", labels=LABELS), cost=COST, pool=fashion["train"])
    assert isinstance(expert, CnnExpert)
    return expert


@pytest.mark.parametrize("kind", ["pixel-lr", "pixel-cnn"])
def test_detector_gives_one_probability_row_per_image(kind: str, fitted: dict[str, DetectorBase],
                                                      fashion: dict[str, data.Dataset]) -> None:
    probs = fitted[kind].predict_proba(fashion["test"].images)
    assert probs.shape == (len(fashion["test"]), 2)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert ((probs >= 0) & (probs <= 1)).all()


@pytest.mark.parametrize("kind", ["pixel-lr", "pixel-cnn"])
def test_flattened_rows_are_the_same_images(kind: str, fitted: dict[str, DetectorBase],
                                            fashion: dict[str, data.Dataset]) -> None:
    images = fashion["test"].images[:50]
    assert np.array_equal(fitted[kind].predict_proba(images), fitted[kind].predict_proba(images.reshape(50, -1)))


def test_cnn_ranks_shirts_better_than_the_linear_detector(fitted: dict[str, DetectorBase],
                                                          fashion: dict[str, data.Dataset]) -> None:
    test = fashion["test"]
    auroc = {kind: roc_auc_score(test.y, fitted[kind].predict_proba(test.images)[:, 1]) for kind in fitted}
    assert auroc["pixel-lr"] > 0.85, auroc
    assert auroc["pixel-cnn"] > auroc["pixel-lr"] + 0.015, auroc


@pytest.mark.parametrize("kind", ["pixel-lr", "pixel-cnn"])
def test_round_trip_gives_identical_probabilities(kind: str, fitted: dict[str, DetectorBase],
                                                  fashion: dict[str, data.Dataset], tmp_path: Path) -> None:
    fitted[kind].save(tmp_path / kind)
    loaded = load_detector(tmp_path / kind)
    images = fashion["test"].images
    assert type(loaded) is type(fitted[kind])
    assert np.array_equal(loaded.predict_proba(images), fitted[kind].predict_proba(images))


def test_cnn_fit_is_deterministic_in_its_seed(fashion: dict[str, data.Dataset]) -> None:
    train, images = fashion["train"].subset(np.arange(600)), fashion["test"].images[:100]

    def probs(seed: int) -> np.ndarray:
        return PixelCNN(epochs=1, seed=seed).fit(train.images, train.y).predict_proba(images)

    assert np.array_equal(probs(0), probs(0))
    assert not np.array_equal(probs(0), probs(1))


def test_images_of_another_size_are_a_clear_error(fitted: dict[str, DetectorBase]) -> None:
    with pytest.raises(ValueError, match="28x28"):
        fitted["pixel-cnn"].predict_proba(np.zeros((2, 20, 20), dtype=np.uint8))
    with pytest.raises(ValueError, match="784 features"):
        fitted["pixel-lr"].predict_proba(np.zeros((2, 20, 20), dtype=np.uint8))


def test_corrupt_weights_fail_at_load_naming_the_file(fitted: dict[str, DetectorBase], tmp_path: Path) -> None:
    fitted["pixel-cnn"].save(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match=WEIGHTS_FILE):
        PixelCNN.load(tmp_path)


@pytest.mark.parametrize("weights", ["garbage", "another architecture"])
def test_bad_weights_with_fixed_checksums_still_fail_at_load(weights: str, fitted: dict[str, DetectorBase],
                                                             fashion: dict[str, data.Dataset], tmp_path: Path) -> None:
    fitted["pixel-cnn"].save(tmp_path / "cnn")
    if weights == "garbage":
        (tmp_path / "cnn" / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    else:
        train = fashion["train"].subset(np.arange(200))
        PixelCNN(channels=4, epochs=1).fit(train.images, train.y).save(tmp_path / "narrow")
        (tmp_path / "cnn" / WEIGHTS_FILE).write_bytes((tmp_path / "narrow" / WEIGHTS_FILE).read_bytes())
    write_manifest(tmp_path / "cnn", "cascade.detector.manifest", {"kind": "pixel-cnn"})
    with pytest.raises(ArtifactError, match=f"{WEIGHTS_FILE}: corrupt or mismatched CNN weights"):
        PixelCNN.load(tmp_path / "cnn")


def test_cnn_expert_answers_with_cnn_probabilities_at_the_expert_price(
        trained_expert: CnnExpert, fitted: dict[str, DetectorBase],
        fashion: dict[str, data.Dataset]) -> None:
    expert = trained_expert
    images = fashion["test"].images[:40]
    result = expert.judge(images)
    assert isinstance(result, ExpertResult)
    assert result.probs.shape == (40, 2) and result.label_names == tuple(LABELS)
    assert np.allclose(result.probs, fitted["pixel-cnn"].predict_proba(images))
    assert (result.prompt_tokens == 0).all() and (result.completion_tokens == 0).all()
    assert (result.cost == COST.expert_per_call).all()
    assert not result.truncated.any()
    assert (result.latency_s > 0).all() and np.allclose(result.latency_s, result.latency_s[0])


def test_second_make_expert_loads_the_cached_cnn(trained_expert: CnnExpert, cascade_home: Path,
                                                 fashion: dict[str, data.Dataset], monkeypatch: pytest.MonkeyPatch) -> None:
    def train_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CNN was trained again instead of loaded from the cache")

    monkeypatch.setattr(PixelCNN, "fit", train_again)
    first = trained_expert
    second = make_expert(ExpertConfig(kind="cnn", labels=LABELS), cost=COST, pool=fashion["train"])
    images = fashion["test"].images
    assert np.array_equal(second.judge(images).probs, first.judge(images).probs)
    assert len(list((cascade_home / "cache" / "experts").glob("pixel-cnn-*"))) == 1


def test_another_pool_trains_another_cnn(trained_expert: CnnExpert, cascade_home: Path,
                                         fashion: dict[str, data.Dataset]) -> None:
    pool = fashion["calibration"].subset(np.arange(300))
    make_expert(ExpertConfig(kind="cnn", labels=LABELS), pool=pool)
    assert len(list((cascade_home / "cache" / "experts").glob("pixel-cnn-*"))) == 2


def test_async_judge_matches_judge(trained_expert: CnnExpert, fashion: dict[str, data.Dataset]) -> None:
    expert = trained_expert
    images = fashion["test"].images[:8]
    assert np.array_equal(asyncio.run(expert.ajudge(images)).probs, expert.judge(images).probs)
    assert len(expert.judge(images[:0])) == 0


def test_explanation_states_the_probabilities_and_refuses_questions(trained_expert: CnnExpert,
                                                                    fashion: dict[str, data.Dataset]) -> None:
    expert = trained_expert
    image = fashion["test"].images[0]
    explanation = expert.explain(image)
    assert "normal" in explanation.text and "anomaly" in explanation.text
    assert explanation.cost == COST.expert_per_call and explanation.completion_tokens == 0
    with pytest.raises(ExpertError, match="generates no text"):
        expert.explain(image, question="Why?", history=explanation.history)


def test_cnn_expert_needs_an_image_pool_and_matching_labels(fashion: dict[str, data.Dataset],
                                                            fitted: dict[str, DetectorBase]) -> None:
    with pytest.raises(ValueError, match="pool"):
        make_expert(ExpertConfig(kind="cnn", labels=LABELS))
    with pytest.raises(ValueError, match="3 label names"):
        CnnExpert(fitted["pixel-cnn"], ["a", "b", "c"])  # type: ignore[arg-type]
