"""Tabular detectors on real tables: shuttle (binary, anomalies) and wine (three cultivars)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.metrics import roc_auc_score

from cascade import data
from cascade.artifact import ArtifactError
from cascade.calibration import ece
from cascade.config import CascadeConfig
from cascade.data import Dataset
from cascade.data.dataset import stratified_subsample
from cascade.detectors import make_detector
from cascade.small import SmallTier

Splits = dict[str, Dataset]
SUPERVISED = ("tabular-lr", "tabular-hgb")


def splits_of(dataset: Dataset, n: int | None = None) -> Splits:
    if n is not None:
        dataset = dataset.subset(stratified_subsample(dataset.y, dataset.groups, n, seed=0))
    index = data.split_indices(dataset.y, dataset.groups, seed=0)
    return {name: dataset.subset(i) for name, i in index.items()}


def small_tier(dataset: dict[str, Any], labels: list[str], kind: str, calibrator: str = "platt",
               **detector: Any) -> SmallTier:
    config = CascadeConfig.model_validate({"dataset": dataset, "detector": {"kind": kind, **detector},
                                           "calibrator": {"kind": calibrator}, "expert": {"labels": labels}})
    return SmallTier.from_config(config)


@pytest.fixture(scope="module")
def rows(shuttle: Dataset) -> Splits:
    return splits_of(shuttle, 6000)


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    path = tmp_path_factory.mktemp("wine") / "wine.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fitted_shuttle(rows: Splits) -> dict[str, SmallTier]:
    return {kind: small_tier({"name": "shuttle"}, ["normal", "anomaly"], kind).fit(rows["train"], rows["calibration"])
            for kind in SUPERVISED}


@pytest.mark.parametrize("kind", SUPERVISED)
def test_supervised_tabular_detectors_find_shuttle_anomalies(kind: str, fitted_shuttle: dict[str, SmallTier],
                                                             rows: Splits) -> None:
    probs = fitted_shuttle[kind].predict_proba(rows["test"].X)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert roc_auc_score(rows["test"].y, probs[:, 1]) > 0.99
    assert np.mean(probs.argmax(axis=1) == rows["test"].y) > 0.98


@pytest.mark.parametrize("kind", SUPERVISED)
def test_tabular_tier_round_trips_through_its_artifact(kind: str, fitted_shuttle: dict[str, SmallTier],
                                                       rows: Splits, tmp_path: Path) -> None:
    fitted_shuttle[kind].save(tmp_path)
    loaded = SmallTier.load(tmp_path)
    assert loaded.detector.kind == kind
    np.testing.assert_array_equal(loaded.predict_proba(rows["test"].X), fitted_shuttle[kind].predict_proba(rows["test"].X))
    model = tmp_path / "detector" / "model_.skops"
    model.write_bytes(model.read_bytes()[:-64])
    with pytest.raises(ArtifactError, match="model_.skops"):
        SmallTier.load(tmp_path)


@pytest.mark.parametrize("kind", SUPERVISED)
def test_three_wine_cultivars_are_told_apart_and_calibrated(kind: str, wine_csv: Path) -> None:
    dataset = {"name": "csv", "path": str(wine_csv), "label_column": "target"}
    splits = splits_of(data.load("csv", path=wine_csv, label_column="target"))
    tier = small_tier(dataset, ["barbera", "barolo", "grignolino"], kind, calibrator="temperature")
    tier.fit(splits["train"], splits["calibration"])
    probs = tier.predict_proba(splits["test"].X)
    assert probs.shape == (len(splits["test"]), 3) and tier.n_classes == 3
    assert np.mean(probs.argmax(axis=1) == splits["test"].y) > 0.85
    assert ece(probs, splits["test"].y) < 0.2


def test_the_logistic_detector_scales_its_features() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(400, 2)) * np.array([1.0, 1000.0])
    y = (rows[:, 0] + rows[:, 1] / 1000.0 > 0).astype(int)
    detector = make_detector("tabular-lr", C=0.01).fit(rows, y)
    unscaled = make_detector("tabular-lr", C=0.01).fit(rows / np.array([1.0, 1000.0]), y)
    np.testing.assert_allclose(detector.predict_proba(rows), unscaled.predict_proba(rows / np.array([1.0, 1000.0])),
                               atol=1e-6)


@pytest.mark.parametrize(("kind", "params"), [("tabular-lr", {}), ("tabular-hgb", {}), ("isolation-forest", {}),
                                              ("pyod", {"model": "ECOD"})])
def test_tabular_detectors_take_missing_values_and_keep_their_handling_when_saved(
        kind: str, params: dict[str, Any], tmp_path: Path) -> None:
    """Breast-cancer rows with 5% of one column missing: fitted, served and reloaded alike."""
    from cascade.detectors import load_detector

    rows, y = load_breast_cancer(return_X_y=True)
    rows[np.random.default_rng(0).choice(len(rows), 28, replace=False), 1] = np.nan
    train, test = np.arange(len(rows)) % 4 != 0, np.arange(len(rows)) % 4 == 0
    detector = make_detector(kind, **params).fit(rows[train], y[train])
    probs = detector.predict_proba(rows[test])
    assert np.isfinite(probs).all() and np.isnan(rows[test]).any()
    detector.save(tmp_path)
    np.testing.assert_array_equal(load_detector(tmp_path).predict_proba(rows[test]), probs)
    if not detector.one_class:
        assert np.mean(probs.argmax(axis=1) == y[test]) > 0.9


def test_the_logistic_detector_imputes_with_a_was_missing_indicator() -> None:
    rows, y = load_breast_cancer(return_X_y=True)
    rows[::20, 1] = np.nan
    model = make_detector("tabular-lr").fit(rows, y).model_
    assert model.named_steps["lr"].n_features_in_ == rows.shape[1] + 1  # the indicator of column 1
    imputed = model.named_steps["impute"].transform(rows[:1])
    assert imputed[0, 1] == pytest.approx(np.nanmean(rows[:, 1])) and imputed[0, -1] == 1.0


def test_tabular_detectors_refuse_infinite_values() -> None:
    with pytest.raises(ValueError, match="input holds inf"):
        make_detector("tabular-hgb").fit(np.array([[1.0, np.inf], [2.0, 3.0]] * 5), np.array([0, 1] * 5))


def test_tabular_detectors_refuse_rows_of_another_width(fitted_shuttle: dict[str, SmallTier]) -> None:
    with pytest.raises(ValueError, match="fitted on 9 features, got 4"):
        fitted_shuttle["tabular-hgb"].predict_proba(np.zeros((2, 4)))


@pytest.fixture(scope="module")
def fitted_pyod(rows: Splits) -> dict[str, SmallTier]:
    return {model: small_tier({"name": "shuttle"}, ["normal", "anomaly"], "pyod", calibrator="isotonic",
                              params={"model": model}).fit(rows["train"], rows["calibration"])
            for model in ("ECOD", "IForest")}


@pytest.mark.parametrize("model", ["ECOD", "IForest"])
def test_pyod_detectors_learn_from_normal_rows_and_rank_anomalies_first(model: str, fitted_pyod: dict[str, SmallTier],
                                                                        rows: Splits) -> None:
    tier = fitted_pyod[model]
    assert set(tier.training_subset(rows["train"]).y.tolist()) == {0}
    probs = tier.predict_proba(rows["test"].X)
    assert roc_auc_score(rows["test"].y, probs[:, 1]) > 0.95
    assert ece(probs, rows["test"].y) < ece(tier.predict_raw(rows["test"].X), rows["test"].y)


def test_pyod_artifact_loads_without_pickle_and_refuses_another_class(fitted_pyod: dict[str, SmallTier], rows: Splits,
                                                                      tmp_path: Path) -> None:
    import json

    from cascade.artifact import write_manifest

    fitted_pyod["ECOD"].save(tmp_path)
    np.testing.assert_array_equal(SmallTier.load(tmp_path).predict_proba(rows["test"].X[:100]),
                                  fitted_pyod["ECOD"].predict_proba(rows["test"].X[:100]))
    spec = tmp_path / "detector" / "detector.json"  # claim another model: its class is not trusted
    body = json.loads(spec.read_text())
    body["params"]["model"], body["state"]["model_type_"] = "COPOD", "pyod.models.copod.COPOD"
    spec.write_text(json.dumps(body))
    write_manifest(tmp_path / "detector", "cascade.detector.manifest")
    write_manifest(tmp_path, "cascade.small.manifest")
    with pytest.raises(ArtifactError, match=r"untrusted types \['pyod.models.ecod.ECOD'\]"):
        SmallTier.load(tmp_path)


def test_unknown_pyod_model_is_named_at_config_load(tmp_path: Path) -> None:
    from cascade.config import ConfigError

    with pytest.raises(ConfigError, match="detector.params.model: PyOD has no model 'Ecod2'"):
        CascadeConfig.from_dict({"dataset": {"name": "shuttle"}, "detector": {"kind": "pyod", "params": {"model": "Ecod2"}}})


def test_the_shipped_supervised_shuttle_config_learns_from_its_300_labels(shuttle: Dataset) -> None:
    config = CascadeConfig.from_yaml(Path(__file__).resolve().parents[1] / "experiments/configs/shuttle-supervised.yaml")
    splits = splits_of(shuttle, config.dataset.max_samples)
    tier = SmallTier.from_config(config).fit(splits["train"], splits["calibration"])
    assert len(tier.training_subset(splits["train"])) == 300
    assert roc_auc_score(splits["test"].y, tier.predict_proba(splits["test"].X)[:, 1]) > 0.98
