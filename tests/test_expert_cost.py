"""The predicted expert cost as a policy feature: what the cost model says for each sample, built by the
small tier (one code path for harness, `cascade tune` and serving), saved with it, and checked at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.artifact import ArtifactError
from cascade.config import CascadeConfig
from cascade.data.roles import load_roles
from cascade.expert_cost import CHARS_PER_TOKEN, PredictedExpertCost, input_chars
from cascade.experts.prompts import serialize_rows
from cascade.small import SmallTier
from policies import LearnedPolicy
from policies.tiers import Hop

LLM_COST = {"expert_per_call": 0.01, "expert_per_1k_prompt_tokens": 0.5, "expert_per_1k_completion_tokens": 1.5}


def shuttle_config(artifact_dir: Path, expert: dict, **detector: object) -> CascadeConfig:
    return CascadeConfig.model_validate({
        "artifact_dir": str(artifact_dir),
        "dataset": {"name": "shuttle", "max_samples": 1200},
        "detector": {"kind": "isolation-forest", "one_class": True, **detector}, "calibrator": {"kind": "isotonic"},
        "expert": {"labels": ["normal", "anomaly"], **expert}, "policy": {"kind": "learned"}, "cost": LLM_COST,
    })


def test_the_cost_of_a_prompted_expert_is_what_the_cost_model_says_for_the_texts_length(spamassassin) -> None:
    config = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"},
                                          "expert": {"kind": "vllm", "shots": 4, "shot_max_tokens": 20,
                                                      "max_input_tokens": 64}, "cost": LLM_COST})
    estimate = PredictedExpertCost.from_config(config)
    texts = [spamassassin.texts[i] for i in range(0, 400, 7)]
    sample_tokens = np.minimum(np.ceil(np.array([len(t) for t in texts]) / CHARS_PER_TOKEN), 64)
    expected = config.cost.expert_cost(estimate.frame_tokens + sample_tokens, 1)
    np.testing.assert_allclose(estimate.transform(texts), expected)
    assert estimate.frame_tokens > 4 * 20  # the shots are part of every prompt
    assert np.ptp(estimate.transform(texts)) > 0  # short mails cost less than long ones


def test_feature_rows_are_counted_as_the_expert_writes_them(shuttle) -> None:
    rows = shuttle.X[:50]
    np.testing.assert_array_equal(input_chars(rows), [len(text) for text in serialize_rows(rows)])


def test_an_expert_that_reads_no_prompt_costs_its_per_call_price_for_every_sample(shuttle) -> None:
    config = shuttle_config(Path("unused"), {"kind": "knn-vote", "shots": 4})
    assert np.all(PredictedExpertCost.from_config(config).transform(shuttle.X[:20]) == LLM_COST["expert_per_call"])


def test_the_small_tier_adds_the_cost_column_last_for_a_learned_policy_and_keeps_it_when_saved(
        shuttle, tmp_path: Path) -> None:
    config = shuttle_config(tmp_path / "artifact", {"kind": "vllm", "shots": 4})
    roles = load_roles(config)
    small = SmallTier.from_config(config).fit(roles.train, roles.fit)
    features = small.features(roles.test.X)
    assert features.shape == (len(roles.test), small.n_features) and small.n_features == small.n_classes + 1
    np.testing.assert_allclose(features[:, -1], PredictedExpertCost.from_config(config).transform(roles.test.X))
    small.save(tmp_path / "small")
    np.testing.assert_array_equal(SmallTier.load(tmp_path / "small").features(roles.test.X), features)
    rule = config.model_copy(update={"policy": config.policy.model_copy(update={"kind": "confidence"})})
    assert SmallTier.from_config(rule).expert_cost is None  # on by default for a learned policy only
    forced = shuttle_config(tmp_path, {"kind": "knn-vote", "shots": 4}, cost_feature=False)
    assert SmallTier.from_config(forced).expert_cost is None


def test_a_policy_fitted_on_another_feature_count_fails_at_load_not_at_the_first_request(
        shuttle, tmp_path: Path) -> None:
    from deployments.served import load_served

    config = shuttle_config(tmp_path / "artifact", {"kind": "knn-vote", "shots": 4})
    roles = load_roles(config)
    small = SmallTier.from_config(config).fit(roles.train, roles.fit)
    without_cost = small.predict_proba(roles.fit.X)
    correct = (without_cost.argmax(axis=1) == roles.fit.y).astype(float)
    policy = LearnedPolicy(n_classes=2).fit(without_cost, correct, np.ones_like(correct))
    small.save(tmp_path / "artifact" / "small")
    Hop(policy, 0.5).save(tmp_path / "artifact" / "hop")
    with pytest.raises(ArtifactError, match="fitted on 2 feature columns, the small tier .* gives 3"):
        load_served(config)
    with pytest.raises(ValueError, match="fitted on 2 feature columns, got 3"):
        policy.score(small.features(roles.fit.X))
