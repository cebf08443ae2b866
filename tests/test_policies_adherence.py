"""Budget guarantees hold over 200 random calibration/test splits of synthetic detector outputs.

Slack (Monte-Carlo), stated once for every adherence test:
* "in expectation" guarantees: the mean realised value over the splits may exceed the target by at
  most 3 standard errors of that mean;
* "with probability ≥ 1-δ" guarantees: the share of splits that violate the target may exceed δ
  only up to the 99.9% quantile of Binomial(200, δ) / 200 (a one-sided binomial test at level
  0.001). Refusals (infeasible targets) are not violations, as in the guarantees themselves.

The pool has 20,000 samples and each calibration split 500, so the test parts (19,500) measure
the population rates closely. All 200 splits are tuned and evaluated at once (fit_thresholds).
"""

import numpy as np
import pytest
from scipy.stats import binom

from policies import (
    AcceptedErrorTuner, ConfidencePolicy, CostTuner, JointTuner, PosthocPolicy, RateTuner, budget_adherence,
    random_splits, simulate, threshold_grid,
)

SPLITS, CALIBRATION = 200, 500


def allowed_violation_rate(delta):
    return binom.ppf(0.999, SPLITS, delta) / SPLITS


def expectation_holds(summary, metric):
    stats = summary["metrics"][metric]
    return stats["mean"] <= stats["target"] + 3 * stats["standard_error"]


@pytest.fixture(scope="module")
def pool():
    data = simulate(20000, seed=11)
    return data, ConfidencePolicy(n_classes=2).score(data.features)


def fit_part_grid(max_rate=1.0):
    """Learn-then-Test's thresholds, placed on a fit part drawn apart from the pool."""
    return threshold_grid(ConfidencePolicy(n_classes=2).score(simulate(2000, seed=12).features), max_rate=max_rate)


def adherence(tuner, pool):
    data, scores = pool
    return budget_adherence(
        tuner, scores, data.small_correct, data.expert_cost, calibration_size=CALIBRATION, n_splits=SPLITS, seed=1
    ).summary()


@pytest.mark.parametrize("beta", [0.05, 0.2, 0.5])
def test_crc_rate_mean_realised_deferral_is_at_most_the_target(beta, pool):
    assert expectation_holds(adherence(RateTuner(target=beta), pool), "defer_rate")


def test_crc_rate_uses_its_budget_rather_than_being_conservative(pool):
    assert adherence(RateTuner(target=0.2), pool)["metrics"]["defer_rate"]["mean"] >= 0.19


@pytest.mark.parametrize("delta", [0.05, 0.1])
def test_high_probability_rate_is_violated_in_at_most_delta_of_splits(delta, pool):
    summary = adherence(RateTuner(target=0.2, delta=delta), pool)
    assert summary["violation_rate"] <= allowed_violation_rate(delta)


def test_cost_per_1k_mean_is_at_most_the_target(pool):
    summary = adherence(CostTuner(target_per_1k=150.0, small_cost=0.01, max_expert_cost=20.0), pool)
    assert expectation_holds(summary, "cost_per_1k")


def test_accepted_error_exceeds_alpha_in_at_most_delta_of_splits(pool):
    summary = adherence(AcceptedErrorTuner(alpha=0.1, delta=0.1, grid=fit_part_grid()), pool)
    assert summary["refusal_rate"] < 0.05
    assert summary["violation_rate"] <= allowed_violation_rate(0.1)


@pytest.mark.parametrize("procedure", ["fixed-sequence", "bonferroni"])
def test_joint_target_is_violated_in_at_most_delta_of_splits(procedure, pool):
    tuner = JointTuner(alpha=0.1, max_rate=0.6, delta=0.1, procedure=procedure, grid=fit_part_grid(0.6))
    summary = adherence(tuner, pool)
    assert summary["refusal_rate"] < 0.2
    assert summary["violation_rate"] <= allowed_violation_rate(0.1)


def test_guarantees_hold_for_a_learned_policy_too(pool):
    data, _ = pool
    fit_split = simulate(3000, seed=12)
    policy = PosthocPolicy(n_classes=2).fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
    scores = policy.score(data.features)
    summary = budget_adherence(
        RateTuner(target=0.2, delta=0.1), scores, calibration_size=CALIBRATION, n_splits=SPLITS, seed=2
    ).summary()
    assert summary["violation_rate"] <= allowed_violation_rate(0.1)


def test_the_violation_check_catches_an_uncertified_accepted_error_threshold(pool):
    """The naive rule "largest threshold whose calibration accepted error is ≤ α" fails often; ours does not."""
    data, scores = pool
    calibration, test = random_splits(len(scores), CALIBRATION, SPLITS, seed=1)
    order = np.argsort(scores[calibration], axis=1)
    ascending = np.take_along_axis(scores[calibration], order, axis=1)
    wrong = np.cumsum(~np.take_along_axis(data.small_correct[calibration], order, axis=1), axis=1)
    ok = wrong / np.arange(1, CALIBRATION + 1) <= 0.1
    naive = ascending[np.arange(SPLITS), CALIBRATION - 1 - np.argmax(ok[:, ::-1], axis=1)]
    accepted = scores[test] <= naive[:, None]
    naive_error = (accepted & ~data.small_correct[test]).sum(axis=1) / accepted.sum(axis=1)
    certified = adherence(AcceptedErrorTuner(alpha=0.1, delta=0.1, grid=fit_part_grid()), pool)
    assert np.mean(naive_error > 0.1) > 0.3 > certified["violation_rate"]
