"""`cascade tune` end to end on a small real SpamAssassin subset (no-LLM expert): the policy learns on
the fit part, the threshold is certified on the certify part, and the certificate says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cascade.config import CascadeConfig
from cascade.data.roles import load_roles
from policies.tune import tune

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "spamassassin.yaml"


@pytest.fixture
def raw(spamassassin: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    import cascade.scoring
    import policies.certify_ledger

    monkeypatch.setattr(cascade.scoring, "cache_dir", lambda name: (tmp_path / "cache" / name))
    monkeypatch.setattr(policies.certify_ledger, "cache_dir", lambda name: (tmp_path / "cache" / name))
    (tmp_path / "cache" / "scores").mkdir(parents=True)
    raw = CascadeConfig.from_yaml(CONFIG).model_dump(mode="json")
    raw["dataset"]["max_samples"] = 500
    raw["dataset"]["label_budget"] = 64
    raw["expert"] = {"kind": "knn-vote", "labels": ["ham", "spam"], "shots": 4, "max_model_len": 1024}
    raw["control_expert"] = None
    raw["cost"] = {"expert_per_call": 0.0, "expert_per_1k_prompt_tokens": 1.0}
    raw["artifact_dir"] = str(tmp_path / "artifact")
    raw["experiment"].update(max_scored_per_split=None)
    return raw


def test_a_learned_policy_and_an_accepted_error_budget_certify_on_the_certify_part(raw: dict) -> None:
    raw["policy"] = {"kind": "posthoc"}
    raw["budget"] = {"kind": "accepted-error", "target": 0.3, "delta": 0.2, "n_grid": 10}
    config = CascadeConfig.from_dict(raw)
    certificate = tune(config, progress=False)
    assert certificate["part"] == "certify" and certificate["n"] == load_roles(config).sizes()["certify"]
    assert "fixed before certification" in certificate["method"] and certificate["tie_seed"] == 0
    saved = json.loads((Path(config.artifact_dir) / "certificate.json").read_text())
    assert saved == certificate


def test_a_cost_budget_states_the_per_call_bound_from_max_model_len(raw: dict) -> None:
    raw["budget"] = {"kind": "cost", "target": 500.0}
    certificate = tune(CascadeConfig.from_dict(raw), progress=False)
    assert "one expert call costs at most 1.024" in certificate["statement"]
    assert certificate["bound"]["cost_per_1k"] <= 500.0


def test_cross_fitting_feeds_a_learned_policy_only_and_the_artifact_says_what_it_cost(raw: dict,
                                                                                      tmp_path: Path) -> None:
    from cascade.small import SmallTier
    from cascade.data.roles import labelled_pool
    from policies.tiers import Hop

    scores = tmp_path / "cache" / "scores"
    raw["budget"] = {"kind": "cost", "target": 500.0}  # the held-out parts are scored by the expert either way
    raw["policy"] = {"kind": "confidence"}  # a rule: crossfit_folds is refused at load (test_config_checks)
    rule = CascadeConfig.from_dict(raw)
    tune(rule, progress=False)
    record = json.loads((Path(rule.artifact_dir) / "policy_fit.json").read_text())
    assert record["crossfit"] is None and record["learned_from"] == record["fit_samples"]
    assert record["extra_expert_usage"] == {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    scored_for_the_rule = len(list(scores.glob("*.json")))
    raw["policy"] = {"kind": "learned", "crossfit_folds": 3}
    raw["budget"]["certify_reuse"] = "spend-delta"  # a second policy tuned on the same certify part
    learned = CascadeConfig.from_dict(raw)
    certificate = tune(learned, progress=False)
    assert certificate["part"] == "certify" and certificate["n"] == load_roles(learned).sizes()["certify"]
    assert certificate["certify_uses"] == 2 and certificate["delta_spent"] is None
    assert len(list(scores.glob("*.json"))) == scored_for_the_rule + 3  # one cached expert run per fold
    record = json.loads((Path(learned.artifact_dir) / "policy_fit.json").read_text())
    pool = len(labelled_pool(learned, load_roles(learned).train))
    assert record["crossfit"] == {"folds": 3, "samples": pool}
    assert record["learned_from"] == record["fit_samples"] + pool
    assert record["extra_expert_usage"]["calls"] == pool
    assert record["choice"] in ("rule", "learned", "blend") and record["reason"]
    hop, small = Hop.load(Path(learned.artifact_dir) / "hop"), SmallTier.load(Path(learned.artifact_dir) / "small")
    assert hop.policy.n_features_in_ == small.n_features == 3  # probabilities + predicted expert cost


def test_the_artifact_holds_the_expert_calibrator_the_app_serves_and_policy_fit_says_what_it_cost(raw: dict) -> None:
    from cascade.artifact import ArtifactError
    from cascade.calibration import load_calibrator
    from cascade.data.roles import labelled_pool
    from cascade.expert_calibration import EXPERT_CALIBRATOR_DIR
    from deployments.served import expert_calibrator, load_served

    config = CascadeConfig.from_dict(raw)  # confidence policy, rate budget: no held-out expert scoring
    tune(config, progress=False)
    root = Path(config.artifact_dir)
    saved = load_calibrator(root / EXPERT_CALIBRATOR_DIR / "calibrator")
    assert saved.kind == "platt" and expert_calibrator(config).kind == "platt"
    record = json.loads((root / "policy_fit.json").read_text())["expert_calibration"]
    pool = len(labelled_pool(config, load_roles(config).train))
    assert record["kind"] == "platt" and record["pool_size"] == pool == record["usage"]["calls"]
    assert "leave-one-out" in record["fitted_on"]

    isotonic = CascadeConfig.from_dict({**raw, "expert": {**raw["expert"], "calibrator": "isotonic"}})
    with pytest.raises(ArtifactError, match="a 'platt' calibrator, the config asks for 'isotonic'"):
        load_served(isotonic)
    other_expert = CascadeConfig.from_dict({**raw, "expert": {**raw["expert"], "shots": 5}})
    with pytest.raises(ArtifactError, match="fitted for the expert 'knn-vote \\(k=4, no LLM\\)'"):
        load_served(other_expert)  # a calibrator of another expert's probabilities is refused
    shutil.rmtree(root / EXPERT_CALIBRATOR_DIR)
    with pytest.raises(ArtifactError, match="expert_calibrator: missing"):
        load_served(config)  # at load, in the driver: never at the first deferred request
    none = CascadeConfig.from_dict({**raw, "expert": {**raw["expert"], "calibrator": "none"}})
    assert expert_calibrator(none) is None and load_served(none).certificate is not None  # needs no calibrator
