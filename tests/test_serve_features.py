"""A feature-row cascade in-process (ODDS shuttle, a fitted tabular-lr small tier): feature rows are
checked per request in numpy, and a request the small tier cannot score fails alone, never its batch."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cascade import data
from cascade.config import CascadeConfig, ExpertConfig
from deployments.answers import Triage
from deployments.contracts import SmallTierUnavailable
from deployments.service import CascadeService
from serving import Tiers, client, in_process_service, load_tiers


@pytest.fixture(scope="module")
def shuttle_config(tmp_path_factory: pytest.TempPathFactory) -> CascadeConfig:
    """Shuttle with a few-label tabular-lr small tier, tuned with ``cascade tune``'s code."""
    from policies.tune import tune

    config = CascadeConfig.model_validate({
        "name": "serve-features-test",
        "artifact_dir": str(tmp_path_factory.mktemp("artifact") / "shuttle"),
        "dataset": {"name": "shuttle", "max_samples": 2000, "label_budget": 200},
        "detector": {"kind": "tabular-lr"},
        "calibrator": {"kind": "platt"},
        "policy": {"kind": "confidence"},
        "budget": {"kind": "rate", "target": 0.2, "window": 200},
        "expert": {"kind": "knn-vote", "shots": 4, "labels": ["normal", "anomaly"]},
        "serve": {"max_samples_per_request": 8, "max_features": 16},
    })
    tune(config, progress=False)
    return config


@pytest.fixture(scope="module")
def shuttle_tiers(shuttle_config: CascadeConfig) -> Tiers:
    return load_tiers(shuttle_config)


@pytest.fixture(scope="module")
def shuttle_service(shuttle_config: CascadeConfig, shuttle: data.Dataset, shuttle_tiers: Tiers) -> CascadeService:
    from cascade.experts import make_expert

    expert = make_expert(ExpertConfig(kind="knn-vote", shots=4, labels=["normal", "anomaly"]), pool=shuttle.subset(
        np.arange(0, len(shuttle), 40)))
    return in_process_service(shuttle_config, expert, shuttle_tiers)


@pytest.fixture(scope="module")
def shuttle_api(shuttle_config: CascadeConfig, shuttle_service: CascadeService) -> TestClient:
    from deployments.control import ControlAccess
    from deployments.http import build_http_app

    return client(build_http_app(shuttle_service, shuttle_config.serve, ControlAccess.from_token("t")))


@pytest.fixture(scope="module")
def rows(shuttle: data.Dataset) -> np.ndarray:
    return np.asarray(shuttle.X[:12], dtype=float)


def _body(rows: list[list[float]]) -> dict[str, Any]:
    return {"samples": [{"features": row} for row in rows]}


def test_the_served_width_is_the_fitted_detectors(shuttle_tiers: Tiers, rows: np.ndarray) -> None:
    served, small = shuttle_tiers
    assert served.n_features == small.detector.n_features_in_ == rows.shape[1]


def test_good_rows_are_answered_with_the_fitted_tiers_scores(shuttle_api: TestClient, shuttle_tiers: Tiers,
                                                              rows: np.ndarray) -> None:
    from policies.ties import canonical

    response = shuttle_api.post("/v1/detect", json=_body(rows[:4].tolist()))
    assert response.status_code == 200, response.text
    verdicts = response.json()["verdicts"]
    assert [v["label"] in ("normal", "anomaly") for v in verdicts] == [True] * 4
    served, small = shuttle_tiers
    offline = canonical(served.policy.score(small.features(rows[:4].astype(float))))
    assert [v["deferral_score"] for v in verdicts] == offline.tolist()  # each row scored, in request order


@pytest.mark.parametrize(("bad_row", "needle"), [
    (lambda row: row[:-1], "expected {width} features, got {short}"),
    (lambda row: row + [0.5], "expected {width} features, got {long}"),
])
def test_a_row_of_the_wrong_width_is_a_422_naming_the_sample(shuttle_api: TestClient, rows: np.ndarray,
                                                            bad_row: Any, needle: str) -> None:
    good = rows[:3].tolist()
    samples = [good[0], bad_row(good[1]), good[2]]
    response = shuttle_api.post("/v1/detect", json=_body(samples))
    assert response.status_code == 422, response.text
    width = rows.shape[1]
    body = response.json()
    assert body["fields"][0]["field"] == "samples.1.features"
    assert needle.format(width=width, short=width - 1, long=width + 1) in body["message"]


def _with_value_at_2(rows: np.ndarray, value: str) -> str:
    good = [[float(v) for v in row] for row in rows[:2]]
    bad = ", ".join(str(v) for v in good[1][:2]) + f", {value}, " + ", ".join(str(v) for v in good[1][3:])
    return '{"samples": [{"features": %s}, {"features": [%s]}]}' % (good[0], bad)


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "1e999"])
def test_a_row_with_inf_is_a_422_naming_the_sample_and_position(shuttle_api: TestClient, rows: np.ndarray,
                                                                value: str) -> None:
    raw = _with_value_at_2(rows, value)
    response = shuttle_api.post("/v1/detect", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["fields"] == [{"field": "samples.1.features",
                                          "problem": "features must be numbers or null (missing); inf at positions [2]"}]


@pytest.mark.parametrize("value", ["null", "NaN"])
def test_a_missing_value_is_imputed_as_the_fitted_detector_does(shuttle_api: TestClient, shuttle_tiers: Tiers,
                                                                rows: np.ndarray, value: str) -> None:
    raw = _with_value_at_2(rows, value)
    response = shuttle_api.post("/v1/detect", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    from policies.ties import canonical

    served, small = shuttle_tiers
    row = rows[1].astype(float).copy()
    row[2] = np.nan
    offline = canonical(served.policy.score(small.features(row[None, :])))[0]  # the saved pipeline imputes alike
    assert response.json()["verdicts"][1]["deferral_score"] == offline


def test_explain_checks_its_feature_row_too(shuttle_api: TestClient, rows: np.ndarray) -> None:
    response = shuttle_api.post("/v1/explain", json={"sample": {"features": rows[0, :-2].tolist()}})
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "sample.features"


def test_a_batch_with_a_request_the_small_tier_cannot_score_answers_the_others(
        shuttle_service: CascadeService, rows: np.ndarray) -> None:
    """The router's batch: three requests join; the small tier (the real fitted detector) refuses the
    middle one's rows, so it alone fails and the others get the triage they get on their own."""
    batch = [rows[:3], rows[3:5, :-1], rows[5:9]]
    results = asyncio.run(shuttle_service.triage_batch(batch))
    width = rows.shape[1]
    assert isinstance(results[1], SmallTierUnavailable)  # a 503 for that request only
    assert f"fitted on {width} features, got {width - 1}" in str(results[1])
    for payload, result in ((batch[0], results[0]), (batch[2], results[2])):
        assert isinstance(result, Triage) and len(result.defer) == len(payload)
        alone = asyncio.run(shuttle_service.triage_batch([payload]))[0]
        np.testing.assert_allclose(result.small.probabilities, alone.small.probabilities)
        np.testing.assert_allclose(result.scores, alone.scores)


def test_a_good_batch_is_scored_once_and_split_per_request(shuttle_service: CascadeService,
                                                           rows: np.ndarray) -> None:
    results = asyncio.run(shuttle_service.triage_batch([rows[:2], rows[2:7], rows[7:8]]))
    assert [len(r.defer) for r in results] == [2, 5, 1]
    assert len({r.small_ms for r in results}) == 1  # one small-tier call for the whole batch
