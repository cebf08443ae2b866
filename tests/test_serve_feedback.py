"""Decision ids, the decision log and POST /v1/feedback through the real HTTP app (in-process, real artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cascade.config import CascadeConfig
from cascade.decision_log import DecisionLog
from deployments.control import ControlAccess
from deployments.http import build_http_app
from deployments.decisions import content_hash
from policies.watch import certificate_id
from serving import AUTHORIZED, CONTROL_TOKEN, Tiers, detect, in_process_service

FEEDBACK_TOKEN = "test-feedback-token"
LABELLER = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


@pytest.fixture
def log(tmp_path: Path) -> Any:
    with DecisionLog(f"sqlite:///{tmp_path / 'decisions.sqlite'}", flush_interval_s=0.05) as opened:
        yield opened


def app_with(config: CascadeConfig, expert: Any, tiers: Tiers, log: DecisionLog | None,
             feedback: ControlAccess | None = None) -> TestClient:
    service = in_process_service(config, expert, tiers, decision_log=log)
    app = build_http_app(service, config.serve, ControlAccess.from_token(CONTROL_TOKEN),
                         feedback or ControlAccess.from_token(FEEDBACK_TOKEN, section="feedback"))
    return TestClient(app)


def test_every_verdict_is_logged_with_its_id_and_the_small_tiers_probabilities(
        config, knn_expert, tiers, texts, log):
    served, small = tiers
    api = app_with(config, knn_expert, tiers, log)
    batch = texts[:8]
    verdicts = detect(api, batch).json()["verdicts"]
    ids = [v["decision_id"] for v in verdicts]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    logged = {d.id: d for d in log.decisions()}
    assert set(logged) == set(ids)
    expected = small.predict_proba(batch)
    for i, verdict in enumerate(verdicts):
        row = logged[verdict["decision_id"]]
        np.testing.assert_allclose(row.probabilities, expected[i], atol=1e-9)  # the small tier's, not the answer's
        assert (row.tier, row.label, row.certified) == (verdict["source"], verdict["label"], verdict["certified"])
        assert row.deferral_score == verdict["deferral_score"] and row.threshold == verdict["threshold"]
        assert row.deferred == (verdict["source"] == "expert" or verdict["forced"] or verdict["degraded"])
        assert row.content_hash == content_hash(batch[i])
        assert row.certificate_id == certificate_id(served.certificate) is not None


def test_feedback_attaches_labels_per_item_and_is_idempotent(config, knn_expert, tiers, texts, log):
    api = app_with(config, knn_expert, tiers, log)
    verdicts = detect(api, texts[:4]).json()["verdicts"]
    first, second = verdicts[0]["decision_id"], verdicts[1]["decision_id"]
    body = {"items": [{"decision_id": first, "label": "spam"}, {"decision_id": second, "label": "eggs"},
                      {"decision_id": "f" * 32, "label": "ham"}]}
    answer = api.post("/v1/feedback", json=body, headers=LABELLER)
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["ok", "bad label", "unknown id"]
    assert answer.json()["counts"] == {"ok": 1, "bad label": 1, "unknown id": 1}
    again = api.post("/v1/feedback", json={"items": [{"decision_id": first, "label": "spam"},
                                                     {"decision_id": first, "label": "ham"}]}, headers=LABELLER)
    assert [r["status"] for r in again.json()["results"]] == ["duplicate", "conflict"]
    assert [(x.decision.id, x.true_label) for x in log.labelled()] == [(first, "spam")]


def test_feedback_needs_its_own_token_and_well_formed_bounded_bodies(config, knn_expert, tiers, log):
    api = app_with(config, knn_expert, tiers, log)
    item = {"decision_id": "a" * 32, "label": "spam"}
    assert api.post("/v1/feedback", json={"items": [item]}).status_code == 401
    wrong = api.post("/v1/feedback", json={"items": [item]}, headers=AUTHORIZED)  # the control token is not it
    assert wrong.status_code == 401 and "feedback token" in wrong.json()["message"]
    assert api.post("/v1/feedback", json={"items": []}, headers=LABELLER).status_code == 422
    assert api.post("/v1/feedback", json={"items": [{"decision_id": "x"}]}, headers=LABELLER).status_code == 422
    too_many = {"items": [item] * (config.serve.feedback.max_items + 1)}
    over = api.post("/v1/feedback", json=too_many, headers=LABELLER)
    assert over.status_code == 413 and "items" in over.json()["message"]
    locked = app_with(config, knn_expert, tiers, log, ControlAccess.from_token(None, section="feedback"))
    refused = locked.post("/v1/feedback", json={"items": [item]}, headers=LABELLER)
    assert refused.status_code == 403 and "serve.feedback" in refused.json()["message"]


def test_without_a_decision_log_verdicts_have_no_id_and_feedback_says_why(config, knn_expert, tiers, texts):
    api = app_with(config, knn_expert, tiers, None)
    assert detect(api, texts[:2]).json()["verdicts"][0]["decision_id"] is None
    refused = api.post("/v1/feedback", json={"items": [{"decision_id": "a" * 32, "label": "spam"}]},
                       headers=LABELLER)
    assert refused.status_code == 409 and "decision_log" in refused.json()["message"]


def test_reviewers_read_abstained_samples_with_the_feedback_token_and_label_them_back(
        config, knn_expert, tiers, texts, log):
    import time

    from cascade.review import ReviewItem

    service = in_process_service(config, knn_expert, tiers, decision_log=log)
    api = TestClient(build_http_app(service, config.serve, ControlAccess.from_token(CONTROL_TOKEN),
                                    ControlAccess.from_token(FEEDBACK_TOKEN, section="feedback")))
    assert api.get("/v1/review", headers=LABELLER).json() == {"items": [], "labels": ["ham", "spam"], "pending": 0}
    verdict = detect(api, texts[:1]).json()["verdicts"][0]
    service.review_queue.add([ReviewItem(verdict["decision_id"], time.time(), None, {"text": texts[0]})])
    assert api.get("/v1/review").status_code == 401
    assert api.get("/v1/review", headers=AUTHORIZED).status_code == 401  # the control token is not the reviewers'
    waiting = api.get("/v1/review", headers=LABELLER).json()
    assert waiting["pending"] == 1 and waiting["items"][0]["sample"] == {"text": texts[0]}
    back = api.post("/v1/feedback", json={"items": [{"decision_id": verdict["decision_id"], "label": "spam"}]},
                    headers=LABELLER)
    assert back.json()["counts"] == {"ok": 1}
    assert api.get("/v1/review", headers=LABELLER).json()["pending"] == 0
    assert api.get("/v1/review", params={"limit": 0}, headers=LABELLER).status_code == 422
    without = app_with(config, knn_expert, tiers, None)
    assert without.get("/v1/review", headers=LABELLER).status_code == 409
