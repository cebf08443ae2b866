"""Which parts the experts score: the test part always; the held-out (fit, certify) parts only when a
policy learns from the expert's outcomes there or a cost budget certifies on its cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.config import CascadeConfig
from experiments.demo import demo_experiment
from policies.held_out import harness_needs_experts, held_out_needs_experts

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "spamassassin.yaml"


@pytest.mark.parametrize(("policies", "budget", "needed"), [
    (["confidence"], "rate", False),
    (["confidence", "margin", "entropy"], "accepted-error", False),
    (["entropy"], "joint", False),
    (["confidence"], "cost", True),
    (["confidence", "learned"], "rate", True),
    (["posthoc"], "accepted-error", True),
])
def test_only_learning_policies_and_cost_budgets_need_the_expert_on_the_held_out_parts(
        policies: list[str], budget: str, needed: bool) -> None:
    assert held_out_needs_experts(policies, budget) is needed


def test_the_harness_counts_the_swept_policies_and_the_configured_one() -> None:
    config = CascadeConfig.from_yaml(CONFIG)  # confidence + rate, every policy swept (learned among them)
    assert harness_needs_experts(config)
    rules = config.model_copy(update={"experiment": config.experiment.model_copy(update={"policies": ["margin"]})})
    assert not harness_needs_experts(rules)
    learned = rules.model_copy(update={"policy": rules.policy.model_copy(update={"kind": "learned"})})
    assert harness_needs_experts(learned)
    cost = rules.model_copy(update={"budget": rules.budget.as_kind("cost", target=1.0)})
    assert harness_needs_experts(cost)


def test_the_demo_sweeps_rules_so_the_shipped_config_scores_only_the_test_part() -> None:
    config = demo_experiment(CascadeConfig.from_yaml(CONFIG))
    assert config.experiment.policies == ["confidence", "margin", "entropy"]
    assert not harness_needs_experts(config)
    learned = CascadeConfig.from_yaml(CONFIG)
    learned = learned.model_copy(update={"policy": learned.policy.model_copy(update={"kind": "learned"})})
    assert "learned" in demo_experiment(learned).experiment.policies and harness_needs_experts(demo_experiment(learned))


def test_the_demo_bounds_the_calibration_calls_of_every_calibrated_expert() -> None:
    from experiments.demo import demo_settings

    shipped = CascadeConfig.from_yaml(CONFIG)
    demo = demo_settings(shipped, calibration_samples=100)
    assert demo.expert.calibration_samples == demo.control_expert.calibration_samples == 100
    assert demo_settings(shipped, calibration_samples=10_000).expert.calibration_samples == \
        shipped.expert.calibration_samples


def test_the_demo_scores_at_most_its_test_mails_and_never_more_than_the_config() -> None:
    shipped = CascadeConfig.from_yaml(CONFIG)
    assert demo_experiment(shipped, test_mails=150).experiment.max_scored_per_split == 150
    assert demo_experiment(shipped, test_mails=10_000).experiment.max_scored_per_split == \
        shipped.experiment.max_scored_per_split


def test_experiment_policies_is_validated() -> None:
    raw = CascadeConfig.from_yaml(CONFIG).model_dump(mode="json")
    raw["experiment"]["policies"] = ["confidence", "chow"]
    with pytest.raises(ValueError, match="experiment.policies"):
        CascadeConfig.from_dict(raw)


def test_the_demo_traffic_is_a_uniform_draw_of_the_test_split_not_its_tail() -> None:
    from cascade.data.roles import load_roles
    from experiments.demo import traffic_index

    config = CascadeConfig.from_yaml(CONFIG)
    test = load_roles(config).test
    index = traffic_index(len(test), 150, config.experiment.seed)
    assert len(set(index)) == 150 and set(index) <= set(range(len(test)))
    assert abs(test.y[index].mean() - test.y.mean()) < 0.1  # the split's tail of 150 is all spam
    assert list(index) == list(traffic_index(len(test), 150, config.experiment.seed))
