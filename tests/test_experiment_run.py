"""The harness end to end on a small real SpamAssassin subset, with the no-LLM control as the expert:
every output is written, a re-run reads the expert scores from the cache and gives the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cascade.config import CascadeConfig
from experiments.run import run_experiment

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "spamassassin.yaml"


@pytest.fixture
def config(spamassassin: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CascadeConfig:
    import cascade.scoring

    monkeypatch.setattr(cascade.scoring, "cache_dir", lambda name: (tmp_path / "cache" / name))
    (tmp_path / "cache" / "scores").mkdir(parents=True)
    raw = CascadeConfig.from_yaml(CONFIG).model_dump(mode="json")
    raw["dataset"]["max_samples"] = 400
    raw["dataset"]["label_budget"] = 64
    raw["expert"] = {"kind": "knn-vote", "labels": ["ham", "spam"], "shots": 4}
    raw["control_expert"] = None
    raw["experiment"].update(splits=5, random_seeds=2, max_scored_per_split=None, results_dir=str(tmp_path / "results"))
    return CascadeConfig.from_dict(raw)


def test_a_run_writes_every_output_and_a_rerun_hits_the_score_cache(config: CascadeConfig) -> None:
    out = run_experiment(config, progress=False)
    first = json.loads((out / "results.json").read_text())
    assert first["expert_scores_from_cache"] == {"expert": False}
    for name in ("report.md", "frontier_defer.png", "frontier_cost.png", "reliability.png", "budget_adherence.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "## Cascade with `expert`" in report and "| confidence |" in report
    choice = first["scalars"]["expert"]["learned_choice"]
    assert choice["choice"] == "rule" and "< min_samples=200" in choice["reason"]  # 80 calibration mails
    assert f"The `learned` policy serves **rule**: {choice['reason']}" in report

    second = json.loads((run_experiment(config, progress=False) / "results.json").read_text())
    assert second["expert_scores_from_cache"] == {"expert": True}
    for tier, row in first["tiers"].items():  # everything but the measured latency
        assert {k: v for k, v in second["tiers"][tier].items() if k != "mean_latency_ms"} == \
            {k: v for k, v in row.items() if k != "mean_latency_ms"}
    assert second["scalars"] == first["scalars"]


def test_the_oracle_bounds_every_policy_at_every_budget(config: CascadeConfig) -> None:
    results = json.loads((run_experiment(config, progress=False) / "results.json").read_text())
    policies = results["scalars"]["expert"]["policies"]
    for budget, best in policies["oracle"]["at_budget"].items():
        for name, row in policies.items():
            assert row["at_budget"][budget]["accuracy"] <= best["accuracy"] + 1e-12, (name, budget)
            assert row["at_budget"][budget]["gap_to_oracle"] >= -1e-12, (name, budget)


def test_rule_policies_with_a_rate_budget_score_only_the_test_part_with_the_expert(config: CascadeConfig,
                                                                                   tmp_path: Path) -> None:
    rules = config.model_copy(update={"experiment": config.experiment.model_copy(
        update={"policies": ["confidence", "entropy"]})})
    results = json.loads((run_experiment(rules, progress=False) / "results.json").read_text())
    assert results["expert_parts"] == ["test"]
    assert len(list((tmp_path / "cache" / "scores").glob("*.json"))) == 2  # one expert: the test split, its pool
    policies = results["scalars"]["expert"]["policies"]
    assert {"confidence", "entropy", "oracle", "random"} == set(policies)
    assert "learned_choice" not in results["scalars"]["expert"]
    assert results["budget_adherence"] and all(row["splits"] for row in results["budget_adherence"])

    everything = json.loads((run_experiment(config, progress=False) / "results.json").read_text())
    assert everything["expert_parts"] == ["fit", "certify", "test"]
    assert len(list((tmp_path / "cache" / "scores").glob("*.json"))) == 3  # the held-out split added


def test_the_experts_retrieve_only_from_the_labels_the_detector_learned_from(config: CascadeConfig,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import cascade.experts
    from cascade.data.roles import load_roles
    from cascade.small import SmallTier

    pools, real = [], cascade.experts.make_expert

    def recording(expert_config, **kwargs):
        pools.append(kwargs["pool"])
        return real(expert_config, **kwargs)

    monkeypatch.setattr(cascade.experts, "make_expert", recording)
    results = json.loads((run_experiment(config, progress=False) / "results.json").read_text())
    train = load_roles(config).train
    detector_learned_from = SmallTier.from_config(config).training_subset(train)
    assert pools and all(sorted(pool.ids) == sorted(detector_learned_from.ids) for pool in pools)
    assert results["expert_pool_size"] == len(detector_learned_from) < len(train)


def test_the_expert_is_calibrated_on_its_pool_and_reported_before_and_after(config: CascadeConfig) -> None:
    from cascade.calibration import make_calibrator
    from cascade.data.roles import labelled_pool, load_roles
    from cascade.experts import make_expert
    from cascade.experts.calibrated import leaving_out_self
    from cascade.small import fit_small_tier
    from policies.held_out import score_held_out

    roles = load_roles(config)
    held_out = score_held_out(config, roles, fit_small_tier(config, roles)[0], progress=False)
    pool = labelled_pool(config, roles.train)
    expert = make_expert(config.expert, pool=pool)
    with leaving_out_self(expert):
        calibrator = make_calibrator("platt").fit(expert.judge(pool.X).probs, pool.y)  # the pool, nothing held out
    test = roles.test.subset(np.searchsorted(roles.test.ids, held_out.test.small.ids))
    np.testing.assert_allclose(held_out.test.experts["expert"].probs, calibrator.transform(expert.judge(test.X).probs))

    results = json.loads((run_experiment(config, progress=False) / "results.json").read_text())
    row = results["expert_calibration"]["expert"]
    assert row["kind"] == "platt" and row["pool_size"] == len(pool) == row["usage"]["calls"]
    assert row["test"]["accuracy_after"] == pytest.approx(results["tiers"]["expert"]["accuracy"])
    assert row["test"]["ece_after"] == pytest.approx(results["tiers"]["expert"]["ece"])
    report = (Path(config.experiment.results_dir) / config.name / "report.md").read_text()
    assert "| expert | platt | " in report
    assert set(row["compared"]) == {"none", "temperature", "platt", "isotonic"}
    assert row["compared"]["temperature"]["accuracy"] == row["compared"]["none"]["accuracy"]  # answers kept
    assert row["compared"]["platt"]["ece"] == pytest.approx(row["test"]["ece_after"])
