"""Baselines: seeded random, oracle, never, always, and the oracle's dominance over every policy."""

import numpy as np
import pytest

from policies import (
    AlwaysPolicy, ConfidencePolicy, EntropyPolicy, MarginPolicy, NeverPolicy, OraclePolicy, PosthocPolicy,
    RandomPolicy, deferral_curve, simulate,
)

FEATURES = np.full((5, 2), 0.5)


def test_random_policy_is_reproducible_for_a_seed():
    first = RandomPolicy(seed=3).fit(FEATURES, np.ones(5), np.ones(5)).score(FEATURES)
    second = RandomPolicy(seed=3).fit(FEATURES, np.ones(5), np.ones(5)).score(FEATURES)
    assert np.array_equal(first, second)


def test_random_policy_draws_fresh_scores_for_each_batch():
    policy = RandomPolicy(seed=3).fit(FEATURES, np.ones(5), np.ones(5))
    assert not np.array_equal(policy.score(FEATURES), policy.score(FEATURES))


def test_random_policy_scores_are_uniform():
    scores = RandomPolicy(seed=0).score(np.full((20000, 2), 0.5))
    assert scores.mean() == pytest.approx(0.5, abs=0.01) and np.mean(scores > 0.8) == pytest.approx(0.2, abs=0.01)


def test_oracle_at_threshold_zero_defers_exactly_where_small_is_wrong_and_expert_right():
    small_correct = np.array([1, 0, 0, 1, 0])
    expert_correct = np.array([1, 1, 0, 0, 1])
    defer = OraclePolicy().score(FEATURES, small_correct, expert_correct) > 0
    assert defer.tolist() == [False, True, False, False, True]


def test_oracle_scores_are_distinct_so_every_deferral_count_is_a_threshold():
    small_correct, expert_correct = np.zeros(10), np.r_[np.ones(6), np.zeros(4)]
    scores = OraclePolicy().score(np.full((10, 2), 0.5), small_correct, expert_correct)
    assert len(np.unique(scores)) == 10
    thresholds = np.sort(scores)[::-1]
    fixed = [int(np.sum((scores > t) & (expert_correct == 1))) for t in thresholds]
    assert fixed == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6]


def test_oracle_needs_the_outcomes():
    with pytest.raises(ValueError, match="small_correct and expert_correct"):
        OraclePolicy().score(FEATURES)


def test_never_defers_at_any_finite_threshold():
    assert not (NeverPolicy().score(FEATURES) > -1e300).any()


def test_always_defers_at_any_finite_threshold():
    assert (AlwaysPolicy().score(FEATURES) > 1e300).all()


def test_oracle_curve_dominates_every_policy_at_every_deferral_count():
    fit, held_out = simulate(3000, seed=1), simulate(5000, seed=2)
    oracle = deferral_curve(
        OraclePolicy().score(held_out.features, held_out.small_correct, held_out.expert_correct),
        held_out.small_correct, held_out.expert_correct,
    )
    policies = [
        ConfidencePolicy(n_classes=2), MarginPolicy(n_classes=2), EntropyPolicy(n_classes=2), RandomPolicy(seed=0),
        NeverPolicy(), AlwaysPolicy(), PosthocPolicy(n_classes=2),
    ]
    for policy in policies:
        policy.fit(fit.features, fit.small_correct, fit.expert_correct)
        curve = deferral_curve(policy.score(held_out.features), held_out.small_correct, held_out.expert_correct)
        assert np.all(oracle >= curve - 1e-12), type(policy).__name__


def test_deferral_curve_starts_at_small_accuracy_and_ends_at_expert_accuracy():
    data = simulate(1000, seed=0)
    curve = deferral_curve(np.zeros(1000), data.small_correct, data.expert_correct)
    assert curve[0] == pytest.approx(data.small_correct.mean())
    assert curve[-1] == pytest.approx(data.expert_correct.mean())
