"""N tiers and abstention in the config: ``tiers``, the ``chain`` budget, and every check naming its field."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade.config import CascadeConfig, ChainBudget, ConfigError, TierConfig, served_tiers
from cascade.config.tiers import max_request_cost, tier_names
from policies.tuners.chain import ChainGrid, ChainTuner
from policies.tuners.factory import budget_grid, chain_grid, make_tuner

ROOT = Path(__file__).resolve().parents[1]
VOTE = {"name": "vote", "expert": {"kind": "knn-vote", "labels": ["ham", "spam"], "shots": 6}, "cost_per_call": 0.02}
LLM = {"name": "llm", "expert": {"kind": "vllm", "labels": ["ham", "spam"], "shots": 6, "max_model_len": 1000},
       "cost_per_call": 0.01, "cost_per_1k_prompt_tokens": 0.5, "cost_per_1k_completion_tokens": 1.5}
CHAIN = {"kind": "chain", "target": 0.05, "max_abstention": 0.1, "max_cost_per_1k": 60, "delta": 0.1}


def spam(**sections: Any) -> dict[str, Any]:
    return {"dataset": {"name": "spamassassin"}, "detector": {"kind": "tfidf-knn", "one_class": True},
            "tiers": [VOTE, LLM], "budget": CHAIN, **sections}


def problems(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        CascadeConfig.from_dict(raw)
    return str(info.value)


def test_without_tiers_the_expert_is_the_one_tier_priced_by_the_cost_section() -> None:
    config = CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "expert": {"kind": "knn-vote", "shots": 4},
                                      "cost": {"expert_per_call": 0.3, "expert_per_1k_prompt_tokens": 0.5}})
    (tier,) = served_tiers(config)
    assert (tier.name, tier.expert, tier.cost_per_call, tier.cost_per_1k_prompt_tokens) == (
        "expert", config.expert, 0.3, 0.5)
    assert tier_names(config) == ["small", "expert"]


def test_the_one_hop_chain_is_a_chain_budget_without_tiers() -> None:
    config = CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "expert": {"kind": "knn-vote", "shots": 4},
                                      "budget": {"kind": "chain", "target": 0.05, "delta": 0.1}})
    assert isinstance(config.budget, ChainBudget) and config.tiers is None
    assert [tier.name for tier in served_tiers(config)] == ["expert"]


def test_with_tiers_the_expert_is_the_last_tier_and_a_written_config_loads_back(tmp_path: Path) -> None:
    config = CascadeConfig.from_dict(spam())
    assert tier_names(config) == ["small", "vote", "llm"]
    assert config.expert == config.tiers[-1].expert and config.expert.kind == "vllm"
    config.to_yaml(tmp_path / "written.yaml")
    assert CascadeConfig.from_yaml(tmp_path / "written.yaml") == config


def test_the_shipped_chain_config_has_three_tiers_and_abstention() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = CascadeConfig.from_yaml(ROOT / "experiments" / "configs" / "spamassassin-oneclass-chain.yaml")
    assert len(tier_names(config)) >= 3 and config.budget.kind == "chain" and config.budget.max_abstention > 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw["tiers"][1]["expert"].update(labels=["spam", "ham"]),
     "tiers.1.expert.labels: ['spam', 'ham'] differ from tiers.0.expert.labels ['ham', 'spam']; every tier answers "
     "with the same words, in the same order"),
    (lambda raw: raw["tiers"][0]["expert"].update(labels=["ham", "spam", "phish"]),
     "tiers.0.expert.labels: 3 label words ['ham', 'spam', 'phish'] for the 2 classes of dataset 'spamassassin'"),
    (lambda raw: raw["tiers"][0]["expert"].update(kind="cnn", shots=0),
     "tiers.0.expert.kind: 'cnn' judges images, but dataset 'spamassassin' holds text"),
    (lambda raw: raw["tiers"][0]["expert"].update(kv_cache_gib=4),
     "tiers.0.expert.kv_cache_gib: only vllm experts read it; this expert is 'knn-vote'"),
    (lambda raw: raw["tiers"][0]["expert"].update(shots=0),
     "tiers.0.expert.shots: a knn-vote expert votes its retrieved neighbours; set shots >= 1"),
    (lambda raw: raw["tiers"][0].pop("cost_per_call"),
     "tiers.0.cost_per_call: a chain budget weighs what each tier costs; state this tier's cost_per_call"),
    (lambda raw: raw["tiers"][1].update(name="vote"), "tiers.1.name: 'vote' is also tiers.0's name"),
    (lambda raw: raw["tiers"][0].update(name="small"), "tiers.0.name: 'small' names the small tier"),
    (lambda raw: raw["tiers"][0].update(name="Vote!"), "tiers.0.name: String should match pattern"),
    (lambda raw: raw.update(budget={"kind": "rate", "target": 0.2}),
     "budget.kind: tiers are certified as one rule (a threshold per hop and one to abstain); use a 'chain' budget"),
    (lambda raw: raw.update(expert={"kind": "knn-vote", "labels": ["ham", "spam"], "shots": 6}),
     "expert: with tiers, the expert is the last tier (tiers.1.expert)"),
    (lambda raw: raw.update(control_expert={"kind": "knn-vote", "shots": 4}),
     "control_expert: with tiers every expert is a tier"),
    (lambda raw: raw.update(cost={"expert_per_call": 2.0}),
     "cost.expert_per_call: with tiers each tier states its own price (tiers.N.cost_per_call)"),
    (lambda raw: raw.update(tiers=[]), "tiers: List should have at least 1 item"),
])
def test_tiers_that_disagree_are_refused_naming_the_field(change: Any, message: str) -> None:
    raw = spam(tiers=[{**VOTE, "expert": dict(VOTE["expert"])}, {**LLM, "expert": dict(LLM["expert"])}])
    change(raw)
    assert f"  {message}" in problems(raw)


def test_a_tier_that_cannot_judge_the_datasets_modality_is_refused() -> None:
    raw = {"dataset": {"name": "fashion-mnist"}, "detector": {"kind": "pixel-lr"}, "budget": CHAIN,
           "tiers": [{"name": "cnn", "expert": {"kind": "cnn", "labels": ["normal", "anomaly"]}, "cost_per_call": 1},
                     {"name": "llm", "expert": {"kind": "vllm", "labels": ["normal", "anomaly"]}, "cost_per_call": 1}]}
    assert "  tiers.1.expert.kind: 'vllm' cannot judge images; use 'cnn' for dataset 'fashion-mnist'" in problems(raw)
    raw["tiers"].pop()
    assert CascadeConfig.from_dict(raw).expert.kind == "cnn"


@pytest.mark.parametrize(("budget", "message"), [
    ({"delta": None}, "budget.delta: a chain budget is certified by Learn-then-Test, which needs a failure probability"),
    ({"target": 2.0}, "budget.target: the error bound of a chain budget is a share in (0, 1], got 2.0"),
    ({"hard_cap": 0.3}, "budget.hard_cap: a cap would make a tier answer requests the certified chain rule hands on"),
    ({"max_abstention": None, "abstention_span": 0.2},
     "budget.abstention_span: a grid that abstains needs the abstention bound budget.max_abstention"),
    ({"max_request_cost": 0.01}, "budget.max_request_cost: 0.01 is below what a request through every tier costs at "
                                 "least (0.03)"),
    ({"n_per_tier": 1}, "budget.n_per_tier: Input should be greater than or equal to 2"),
    ({"method": "holm"}, "budget.method: Input should be 'fixed-sequence' or 'bonferroni'"),
])
def test_a_chain_budget_that_cannot_be_certified_as_stated_is_refused(budget: dict[str, Any], message: str) -> None:
    assert f"  {message}" in problems(spam(budget={**CHAIN, **budget}))


def test_a_cost_bound_at_or_below_the_small_tiers_own_cost_is_refused() -> None:
    raw = spam(cost={"small_per_call": 0.1}, budget={**CHAIN, "max_cost_per_1k": 100})
    assert "  budget.max_cost_per_1k: 100 is not above what the small tier alone costs per 1k requests (100" in \
        problems(raw)


def test_fields_only_a_chain_budget_reads_are_refused_on_other_budgets() -> None:
    raw = {"dataset": {"name": "spamassassin"}, "budget": {"kind": "rate", "max_abstention": 0.1}}
    assert "  budget.max_abstention: only chain budgets read it; this budget is 'rate'" in problems(raw)


def test_each_tier_bills_its_own_prices_whatever_its_kind() -> None:
    vote, llm = (TierConfig.model_validate(tier) for tier in (VOTE, LLM))
    assert vote.call_cost() == 0.02 and not TierConfig(name="x", expert=VOTE["expert"]).priced
    assert np.allclose(llm.call_cost(np.array([1000, 200]), np.array([1, 1])), [0.5115, 0.1115])
    assert llm.max_call_cost() == pytest.approx(0.01 + 1.5 * 1000 / 1000)  # the dearer price at max_model_len


def test_the_most_a_request_costs_is_the_small_tier_and_every_tiers_dearest_call() -> None:
    config = CascadeConfig.from_dict(spam(cost={"small_per_call": 0.001}))
    assert max_request_cost(config) == pytest.approx(0.001 + 0.02 + 0.01 + 1.5)
    stated = CascadeConfig.from_dict(spam(budget={**CHAIN, "max_request_cost": 3.0}))
    assert max_request_cost(stated) == 3.0


def test_the_grid_spans_twice_the_abstention_bound_unless_told() -> None:
    assert ChainBudget(target=0.05, max_abstention=0.1, delta=0.1).grid_abstention_span == 0.2
    assert ChainBudget(target=0.05, max_abstention=0.7, delta=0.1).grid_abstention_span == 1.0
    assert ChainBudget(target=0.05, delta=0.1).grid_abstention_span == 0.0
    assert ChainBudget(target=0.05, max_abstention=0.1, abstention_span=0.05, delta=0.1).grid_abstention_span == 0.05


def test_make_tuner_builds_the_chain_tuner_the_budget_describes_over_a_grid_fixed_on_the_fit_part() -> None:
    budget = CascadeConfig.from_dict(spam(budget={**CHAIN, "error": "joint", "method": "bonferroni"})).budget
    rng = np.random.default_rng(0)
    scores = rng.random((300, 3))
    grid = chain_grid(budget, scores, scores < 0.8, [0.0, 0.02, 0.2])
    assert isinstance(grid, ChainGrid) and budget_grid(budget, scores[:, 0]) is None
    tuner = make_tuner(budget, grid=grid, max_request_cost=2.0)
    assert isinstance(tuner, ChainTuner)
    assert (tuner.alpha, tuner.max_abstention, tuner.max_cost_per_1k, tuner.delta, tuner.error, tuner.method,
            tuner.max_request_cost) == (0.05, 0.1, 60, 0.1, "joint", "bonferroni", 2.0)
    with pytest.raises(ValueError, match=r"a 'chain' budget certifies every tier's threshold at once, over a "
                                         r"ChainGrid .*python -m experiments.chain CONFIG"):
        make_tuner(budget)
