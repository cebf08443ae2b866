"""`cascade tune` for a chain budget on a small real table (breast cancer: an isolation forest, then two real
kNN-vote tiers): one rule certified on the certify part, saved with its tiers and served hop by hop exactly as
``apply_chain`` routes; a damaged artifact is refused at load, a second look at the certify part is refused."""

from __future__ import annotations

import json
import shutil
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cascade.artifact import ArtifactError
from cascade.cli import app, explain_error
from cascade.config import CascadeConfig
from cascade.data.roles import load_roles
from cascade.expert_calibration import load_expert_calibrator
from cascade.small import SmallTier
from policies import ChainRule, InfeasibleTarget
from policies.certify_ledger import CertifyPartReused
from policies.chain_scores import score_held_out_chain
from policies.ties import canonical
from policies.tune import tune
from policies.chain_rule import CHAIN_DIR, EXPERT_CALIBRATORS_DIR
from policies.tuners.chain import ChainCertificate, apply_chain

TIERS = [{"name": "near", "expert": {"kind": "knn-vote", "labels": ["benign", "malignant"], "shots": 3},
          "cost_per_call": 0.1},
         {"name": "wide", "expert": {"kind": "knn-vote", "labels": ["benign", "malignant"], "shots": 9},
          "cost_per_call": 1.0}]
BUDGET = {"kind": "chain", "target": 0.1, "max_abstention": 0.3, "max_cost_per_1k": 900, "delta": 0.3, "n_per_tier": 4}


def certificate_of(rule: np.ndarray) -> ChainCertificate:
    return ChainCertificate(method="by hand", rule=rule.tolist(), target={"answered_error": 0.1}, achieved={},
                            bound={"answered_error": 0.1}, guarantee="with probability ≥ 1-δ", statement="by hand",
                            n=1, delta=0.1, error="conditional", cost_range=None, passed_rules=[rule.tolist()])


def hop_by_hop(chain: ChainRule, scores: np.ndarray) -> np.ndarray:
    """The tier answering each sample (-1: abstained), each tier asked only about the samples reaching it."""
    answered_by, reaching = np.full(len(scores), -1), np.arange(len(scores))
    for hop in range(scores.shape[1]):
        stays = chain.stays(hop, scores[reaching, hop])
        answered_by[reaching[stays]] = hop
        reaching = reaching[~stays]
    assert chain.abstains(scores[reaching, -1]).all()
    return answered_by


@pytest.mark.parametrize("rule", [np.array(rule) for rule in product([-np.inf, 0.3, np.inf], [0.5, np.inf],
                                                                     [-np.inf, 0.7, np.inf])])
def test_serving_hop_by_hop_routes_as_apply_chain_with_ties_and_infinite_thresholds(rule: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((400, 3)), 1) + rng.normal(0, 1e-13, (400, 3))  # ties, up to round-off
    chain = ChainRule(("near", "wide"), rule, certificate_of(rule))
    assert hop_by_hop(chain, scores).tolist() == apply_chain(scores, rule)[0].tolist()


def test_a_rule_its_certificate_did_not_pass_or_of_another_length_is_refused() -> None:
    rule = np.array([0.3, 0.5, np.inf])
    with pytest.raises(ValueError, match="not among the rules its certificate passed"):
        ChainRule(("near", "wide"), np.array([0.3, 0.6, np.inf]), certificate_of(rule))
    with pytest.raises(ValueError, match=r"the small tier and 1 tiers \['near'\] has a rule of 2 thresholds"):
        ChainRule(("near",), rule, certificate_of(rule))


@pytest.fixture
def raw(tumours_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import policies.certify_ledger

    monkeypatch.setattr(policies.certify_ledger, "cache_dir", lambda name: tmp_path / "ledger" / name)
    return {"name": "tumours-chain", "artifact_dir": str(tmp_path / "artifact"),
            "dataset": {"name": "csv", "path": str(tumours_home / "tumours.csv"), "label_column": "diagnosis",
                        "label_budget": 40},
            "detector": {"kind": "isolation-forest", "params": {"n_estimators": 10}}, "tiers": TIERS,
            "budget": dict(BUDGET), "experiment": {"seed": 0}}


def test_tuning_writes_the_artifact_and_its_chain_rule_is_the_certified_one(raw: dict[str, Any],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import policies.chain_scores as chain_scores

    scored_ids: list[str] = []
    for name in ("score_small", "_tier_scores"):  # every sample a tier scores, to check none is a test sample
        def spy(*args: Any, real: Any = getattr(chain_scores, name), **kwargs: Any) -> Any:
            scored_ids.extend(next(arg for arg in args if hasattr(arg, "ids")).ids.tolist())
            return real(*args, **kwargs)
        monkeypatch.setattr(chain_scores, name, spy)
    config = CascadeConfig.from_dict(raw)
    certificate = tune(config, progress=False)
    root, roles = Path(config.artifact_dir), load_roles(config)
    assert sorted(path.name for path in root.iterdir()) == ["certificate.json", "chain", "config.yaml",
                                                            "expert_calibrators", "small"]
    chain = ChainRule.load(root / CHAIN_DIR, tiers=["near", "wide"])
    assert chain.rule.tolist() == canonical(certificate["rule"]).tolist() and chain.rule.shape == (3,)
    assert chain.certificate.rule == certificate["rule"] and chain.certificate.holds
    assert json.loads((root / "certificate.json").read_text()) == certificate
    assert (certificate["kind"], certificate["part"], certificate["certify_uses"], certificate["delta_spent"]) == (
        "chain", "certify", 1, 0.3)
    assert certificate["n"] == len(roles.certify_index)
    assert set(scored_ids).isdisjoint(roles.test.ids.tolist()) and set(scored_ids) <= set(roles.calibration.ids)
    answered_by = hop_by_hop(chain, score_held_out_chain(config, roles, progress=False).certify.scores)
    assert set(answered_by.tolist()) == {-1, 0, 1, 2}  # every tier answers some, some are abstained on
    assert np.mean(answered_by == -1) == pytest.approx(certificate["achieved"]["abstention_rate"])
    assert np.mean(answered_by != 0) == pytest.approx(certificate["achieved"]["defer_rate"])  # the small tier's share
    assert SmallTier.load(root / "small").n_classes == 2
    for tier in config.tiers or []:
        saved = root / EXPERT_CALIBRATORS_DIR / tier.name
        assert load_expert_calibrator(saved, tier.expert, roles.train.modality).kind == tier.expert.calibration


def test_a_damaged_or_mismatched_chain_rule_fails_at_load_naming_the_file(raw: dict[str, Any], tmp_path: Path) -> None:
    tune(CascadeConfig.from_dict(raw), progress=False)
    saved = Path(raw["artifact_dir"]) / CHAIN_DIR
    edited, missing = tmp_path / "edited", tmp_path / "missing"
    shutil.copytree(saved, edited)
    shutil.copytree(saved, missing)
    (edited / "chain.json").write_text((edited / "chain.json").read_text().replace('"near"', '"nearer"'))
    with pytest.raises(ArtifactError, match=r"edited/chain.json: checksum mismatch"):
        ChainRule.load(edited)
    (missing / "chain.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing/chain.json: listed in manifest.json but missing"):
        ChainRule.load(missing)
    with pytest.raises(ArtifactError, match=r"chain/chain.json: a rule for the tiers \['near', 'wide'\], the config "
                                            r"has \['near', 'llm'\]"):
        ChainRule.load(saved, tiers=["near", "llm"])


def test_a_different_tuning_on_the_same_certify_part_is_refused_unless_it_spends_delta(raw: dict[str, Any]) -> None:
    first = tune(CascadeConfig.from_dict(raw), progress=False)
    assert tune(CascadeConfig.from_dict(raw), progress=False) == first  # the same tuning again counts once
    raw["budget"]["target"] = 0.25
    with pytest.raises(CertifyPartReused, match="was already used to tune 1 time"):
        tune(CascadeConfig.from_dict(raw), progress=False)
    raw["budget"]["certify_reuse"] = "spend-delta"
    second = tune(CascadeConfig.from_dict(raw), progress=False)
    assert (second["certify_uses"], second["delta_spent"]) == (2, pytest.approx(0.6))
    assert "used for 2 tunings" in second["statement"]


def test_an_unreachable_budget_says_the_best_certifiable_values_and_writes_nothing(raw: dict[str, Any],
                                                                                 tmp_path: Path) -> None:
    raw["budget"].update(target=0.001, max_abstention=0.01)
    config = CascadeConfig.from_dict(raw)
    with pytest.raises(InfeasibleTarget, match="answered_error ≤ 0.001 with abstention_rate ≤ 0.01") as refused:
        tune(config, progress=False)
    assert set(refused.value.best) == {"answered_error", "abstention_rate", "cost_per_1k"}
    assert not Path(config.artifact_dir).exists()
    config.to_yaml(tmp_path / "chain.yaml")
    ran = CliRunner().invoke(app, ["tune", str(tmp_path / "chain.yaml")])
    assert isinstance(ran.exception, InfeasibleTarget)
    assert explain_error(ran.exception)[0] == str(refused.value)  # one line, no exception type: a clear error


def test_the_cli_prints_the_certified_chain_rule(raw: dict[str, Any], tmp_path: Path) -> None:
    CascadeConfig.from_dict(raw).to_yaml(tmp_path / "chain.yaml")
    ran = CliRunner().invoke(app, ["tune", str(tmp_path / "chain.yaml")])
    assert ran.exit_code == 0, ran.output
    certificate = json.loads((Path(raw["artifact_dir"]) / "certificate.json").read_text())
    assert f"rule ({', '.join(f'{value:.4g}' for value in certificate['rule'])}): " in ran.output
