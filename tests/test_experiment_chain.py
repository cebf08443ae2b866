"""The chain harness: its numpy pieces against plain loops, each tier's place on chains built to win or lose,
and a whole run on a small real table (breast cancer, three tiers of real kNN votes) with its cache."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade.config import CascadeConfig, ChainBudget, ConfigError
from cascade.data.roles import load_roles
from cascade.scoring import TierScores
from experiments.chain import run_chain
from experiments.chain.frontier import oracle, pareto_mask, random_routing, rule_metrics, staircase
from experiments.chain.hops import hop_verdicts
from policies.chain_scores import ChainPart, score_chain
from tables import write_tumours


def walk(scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, rule: np.ndarray) -> dict[str, float]:
    """One rule's metrics by walking each sample down the chain (scores on the 1e-9 grid, as the rule compares)."""
    answered = wrong = 0
    spent, by_tier = 0.0, np.zeros(scores.shape[1])
    for sample_scores, sample_correct, sample_costs in zip(np.round(scores, 9), correct, costs):
        for tier, (score, threshold) in enumerate(zip(sample_scores, rule)):
            spent += sample_costs[tier]
            if score <= threshold:
                answered, wrong = answered + 1, wrong + (not sample_correct[tier])
                by_tier[tier] += 1
                break
    n = len(scores)
    return {"accuracy": 1 - wrong / answered if answered else 1.0, "abstention_rate": 1 - answered / n,
            "cost_per_1k": 1000 * spent / n, **{f"share_t{k}": by_tier[k] / n for k in range(len(rule))}}


def draw(n: int, seed: int, tiers: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, tiers)), 1)  # ties at the thresholds
    correct = rng.random((n, tiers)) > scores * np.linspace(0.6, 0.1, tiers)
    return scores, correct, np.tile(np.array([0.0, 1.0, 5.0][:tiers]), (n, 1))


def test_rule_metrics_are_those_of_walking_each_sample_down_the_chain() -> None:
    scores, correct, costs = draw(300, 0)
    rules = np.array(list(product([-np.inf, 0.3, 0.5, np.inf], [0.2, 0.6, np.inf], [0.4, np.inf])))
    metrics = rule_metrics(scores, correct, costs, rules, names=["t0", "t1", "t2"])
    for i, rule in enumerate(rules):
        expected = walk(scores, correct, costs, rule)
        assert {key: float(metrics[key][i]) for key in expected} == pytest.approx(expected), rule


def test_the_pareto_set_is_every_rule_no_other_beats() -> None:
    rng = np.random.default_rng(1)
    metrics = {"cost_per_1k": rng.integers(0, 6, 200).astype(float), "answered_error": rng.integers(0, 6, 200) / 10,
               "abstention_rate": rng.integers(0, 3, 200) / 10}
    points = np.column_stack(list(metrics.values()))
    kept = pareto_mask(metrics)
    for i, point in enumerate(points):
        beaten = any((other <= point).all() and (other < point).any() for other in points)
        copy_before = any((points[j] == point).all() for j in range(i))
        assert kept[i] == (not beaten and not copy_before), i


def test_the_frontier_is_the_best_accuracy_at_each_cost_within_the_abstention_bound() -> None:
    scores, correct, costs = draw(400, 2)
    rules = np.array(list(product([-np.inf, 0.3, 0.6, np.inf], [0.3, 0.6, np.inf], [0.5, 0.8, np.inf])))
    metrics = rule_metrics(scores, correct, costs, rules)
    curve = staircase(metrics, 0.1)
    assert np.all(np.diff(curve["cost_per_1k"]) > 0) and np.all(np.diff(curve["accuracy"]) > 0)
    for cost, accuracy in zip(curve["cost_per_1k"], curve["accuracy"]):
        within = (metrics["cost_per_1k"] <= cost) & (metrics["abstention_rate"] <= 0.1)
        assert accuracy == metrics["accuracy"][within].max()


def test_the_oracle_asks_the_cheapest_right_tier_and_abstains_only_when_none_is_right() -> None:
    correct = np.array([[True, True, True], [False, True, True], [False, False, True], [False, False, False]])
    costs = np.tile([1.0, 10.0, 100.0], (4, 1))
    assert oracle(correct, costs, ["a", "b", "c"]) == {
        "accuracy": 1.0, "abstention_rate": 0.25, "cost_per_1k": 1000 * (1 + 11 + 111 + 111) / 4,
        "share_a": 0.25, "share_b": 0.25, "share_c": 0.25}


def test_random_routing_with_a_rules_shares_costs_what_the_rule_costs() -> None:
    scores, correct, costs = draw(1000, 3)
    rule = np.array([0.4, 0.5, 0.7])
    metrics = rule_metrics(scores, correct, costs, rule[None])
    shares = np.array([metrics[f"share_{name}"][0] for name in ("small", "tier1", "tier2")] +
                      [metrics["abstention_rate"][0]])
    routed = random_routing(correct, costs, shares, seeds=5)
    assert routed["cost_per_1k"] == pytest.approx(metrics["cost_per_1k"][0])
    assert routed["abstention_rate"] == pytest.approx(metrics["abstention_rate"][0])
    assert routed["accuracy"] < metrics["accuracy"][0]  # later tiers err less on the samples scored harder


def part(y: np.ndarray, probs: dict[str, np.ndarray], costs: dict[str, float]) -> ChainPart:
    n = len(y)
    return ChainPart({name: TierScores(tier=name, ids=np.arange(n).astype(str), y=y, probs=p, cost=np.full(n, costs[name]),
                                       latency_s=np.zeros(n), prompt_tokens=np.zeros(n), completion_tokens=np.zeros(n))
                      for name, p in probs.items()})


def calibrated(y: np.ndarray, skill: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose top class is right with the stated confidence (skill raises it)."""
    confidence = rng.uniform(0.5, 0.5 + skill, len(y))
    right = rng.random(len(y)) < confidence
    top = np.where(right, y, 1 - y)
    probs = np.zeros((len(y), 2))
    probs[np.arange(len(y)), top] = confidence
    probs[np.arange(len(y)), 1 - top] = 1 - confidence
    return probs


def chains(last: str, seed: int) -> tuple[ChainPart, ChainPart]:
    parts = []
    for offset in (0, 1):
        rng = np.random.default_rng(seed + offset)
        y = rng.integers(0, 2, 3000)
        small, middle = calibrated(y, 0.35, rng), calibrated(y, 0.45, rng)
        final = middle.copy() if last == "copy" else np.eye(2)[y] * 0.98 + 0.01
        parts.append(part(y, {"small": small, "middle": middle, "last": final},
                          {"small": 0.0, "middle": 1.0, "last": 4.0}))
    return parts[0], parts[1]


@pytest.mark.parametrize(("last", "earns"), [("copy", False), ("perfect", True)])
def test_a_last_tier_earns_its_place_only_when_the_chain_beats_the_cut_without_it(last: str, earns: bool) -> None:
    fit, test = chains(last, seed=10)
    budget = ChainBudget(target=0.1, max_abstention=0.05, delta=0.1, n_per_tier=6)
    verdicts = {hop["tier"]: hop for hop in hop_verdicts(budget, fit, test)}
    hop = verdicts["last"]
    assert hop["cut"] == ["small", "middle"] and hop["earns_its_place"] is earns
    assert (hop["gain_interval"][0] > 0) is earns and not hop["reach"]
    assert verdicts["small"]["reach"]  # the small tier is free: only the chain serves at no cost


CSV_TIERS = [{"name": "near", "expert": {"kind": "knn-vote", "labels": ["benign", "malignant"], "shots": 3},
              "cost_per_call": 0.1},
             {"name": "wide", "expert": {"kind": "knn-vote", "labels": ["benign", "malignant"], "shots": 9},
              "cost_per_call": 1.0}]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CascadeConfig:
    write_tumours(tmp_path)
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    return CascadeConfig.from_dict({
        "name": "tumours-chain", "dataset": {"name": "csv", "path": str(tmp_path / "tumours.csv"),
                                             "label_column": "diagnosis", "label_budget": 40},
        "detector": {"kind": "tabular-lr"}, "tiers": CSV_TIERS,
        "budget": {"kind": "chain", "target": 0.3, "max_abstention": 0.3, "max_cost_per_1k": 900, "delta": 0.3,
                   "n_per_tier": 4},
        "experiment": {"seed": 0, "random_seeds": 3, "results_dir": str(tmp_path / "results")}})


def without_run_facts(results: dict[str, Any]) -> dict[str, Any]:
    drop = ("timing_s", "recorded", "from_cache", "tier_details")
    return {key: value for key, value in results.items() if key not in drop}


def test_a_run_writes_every_output_and_a_rerun_reads_every_tier_from_the_cache(config: CascadeConfig) -> None:
    out = run_chain(config, progress=False)
    first = json.loads((out / "results.json").read_text())
    assert first["tiers"] == ["small", "near", "wide"] and first["from_cache"] == {"near": False, "wide": False}
    assert first["abstention_rate"] == first["certified"]["test"]["abstention_rate"]
    assert [hop["tier"] for hop in first["hops"]] == first["tiers"]
    assert first["data"]["train"] + first["data"]["fit"] + first["data"]["certify"] + first["data"]["test"] == 569
    assert (out / "chain_frontier.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    for heading in ("## Each tier alone (test)", "## The certified rule", "## Does each tier earn its place?",
                    "## Pareto rules", first["verdict"]):
        assert heading in report
    second = json.loads((run_chain(config, progress=False) / "results.json").read_text())
    assert second["from_cache"] == {"near": True, "wide": True}
    assert without_run_facts(second) == without_run_facts(first)


def test_the_certified_rule_holds_its_targets_on_certify_and_is_reported_as_walked_on_test(
        config: CascadeConfig) -> None:
    results = json.loads((run_chain(config, progress=False) / "results.json").read_text())
    certified = results["certified"]
    certificate = certified["certificate"]
    assert certificate["rule"] in certificate["passed_rules"] and certificate["kind"] == "chain"
    assert all(certificate["bound"][metric] <= target for metric, target in certificate["target"].items())
    test = score_chain(config, load_roles(config), progress=False).test
    rule = np.array([float(value) for value in certified["rule"]])
    walked = walk(test.scores, test.correct, test.costs, rule)
    assert certified["test"]["accuracy"] == pytest.approx(walked["accuracy"])
    assert certified["test"]["cost_per_1k"] == pytest.approx(walked["cost_per_1k"])
    assert [certified["test"][f"share_{name}"] for name in results["tiers"]] == pytest.approx(
        [walked[f"share_t{k}"] for k in range(3)])


def test_every_tier_learns_from_the_same_labelled_pool_and_bills_its_own_price(config: CascadeConfig) -> None:
    scored = score_chain(config, load_roles(config), progress=False)
    assert scored.pool_size == 40
    assert np.all(scored.test.costs[:, 1] == 0.1) and np.all(scored.test.costs[:, 2] == 1.0)


def test_a_config_without_a_chain_budget_is_refused_naming_the_field(config: CascadeConfig) -> None:
    rate = config.model_copy(update={"budget": config.budget.as_kind("rate", target=0.2)})
    with pytest.raises(ConfigError, match=r"budget.kind: the chain experiment certifies a 'chain' budget"):
        run_chain(rate, progress=False)
