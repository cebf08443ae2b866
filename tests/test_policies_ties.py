"""Tied scores never starve a budget: randomised tie-breaking, deterministic per sample.

Scores take 5 distinct values (an isotonic calibrator's plateaus); the pool is 10,000 samples,
each of 300 splits certifies on 400 and measures the other 9,600. Keys come from each sample's
content. Slack: the mean realised rate over the splits may exceed the target by at most 3 standard
errors of that mean (Monte-Carlo error); it must reach 0.9 x target. Accepting every tie whole
(no tie-breaking) realises far less, deferring every tie far more: both fail these checks.

Scores are compared on a canonical grid (9 decimals), so a score recomputed with different float
round-off keeps the decision it got when the rule was tuned.
"""

import numpy as np
import pytest

from experiments.sweep import sweep
from policies import AcceptedErrorTuner, RateTuner, budget_adherence, threshold_grid
from policies.ties import canonical, defer_mask, tie_keys, tied

LEVELS = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
SHARES = np.array([0.35, 0.25, 0.16, 0.16, 0.08])   # top plateaus 8 %, 16 %, 16 %: every target falls inside a tie
SPLITS, CERTIFY = 300, 400


@pytest.fixture(scope="module")
def plateaus():
    rng = np.random.default_rng(7)
    scores = rng.choice(LEVELS, size=10000, p=SHARES)
    texts = [f"mail {i}: {rng.integers(1 << 30)}" for i in range(len(scores))]
    return scores, tie_keys(texts, seed=3)


def _mean_rate(tuner, scores, keys):
    summary = budget_adherence(tuner, scores, tie_keys=keys, calibration_size=CERTIFY, n_splits=SPLITS,
                               seed=11).summary()
    return summary["metrics"]["defer_rate"]


@pytest.mark.parametrize("target", [0.05, 0.1, 0.2, 0.3])
def test_a_rate_budget_on_five_score_values_defers_what_it_was_tuned_for(target, plateaus):
    stats = _mean_rate(RateTuner(target=target), *plateaus)
    assert 0.9 * target <= stats["mean"] <= target + 3 * stats["standard_error"]


def test_without_tie_keys_the_same_budget_starves(plateaus):
    scores, _ = plateaus
    assert _mean_rate(RateTuner(target=0.2), scores, None)["mean"] < 0.9 * 0.2


def test_the_high_probability_rate_tuner_uses_ties_too(plateaus):
    with_keys = _mean_rate(RateTuner(target=0.2, delta=0.1), *plateaus)["mean"]
    without = _mean_rate(RateTuner(target=0.2, delta=0.1), plateaus[0], None)["mean"]
    assert 0.8 * 0.2 <= with_keys <= 0.2 and without < 0.1


def test_the_certificate_records_the_tie_rule_and_it_reproduces_the_achieved_rate(plateaus):
    scores, keys = plateaus
    certificate = RateTuner(target=0.2).fit(scores[:CERTIFY], tie_keys=keys[:CERTIFY], tie_seed=3).certificate_
    assert certificate.threshold in LEVELS and 0 < certificate.tie_break < 1 and certificate.tie_seed == 3
    defer = defer_mask(scores[:CERTIFY], certificate.threshold, certificate.tie_break, keys[:CERTIFY])
    assert defer.mean() == pytest.approx(certificate.achieved["defer_rate"])
    assert certificate.achieved["defer_rate"] == pytest.approx((np.floor(401 * 0.2) - 1) / 400)


def test_keys_are_a_function_of_content_and_seed():
    texts = ["Cheap meds, click now", "Meeting at noon", "Cheap meds, click now"]
    keys = tie_keys(texts, seed=1)
    assert keys[0] == keys[2] != keys[1]
    assert np.array_equal(keys, tie_keys(list(texts), seed=1))
    assert not np.array_equal(keys, tie_keys(texts, seed=2))
    rows = np.array([[0.0, 1.5], [-0.0, 1.5], [0.0, 2.5]])
    row_keys = tie_keys(rows, seed=1)
    assert row_keys[0] == row_keys[1] != row_keys[2]


def test_keys_are_uniform():
    keys = tie_keys([f"sample {i}" for i in range(40000)], seed=0)
    counts = np.histogram(keys, bins=20, range=(0, 1))[0]
    expected = len(keys) / 20
    assert ((counts - expected) ** 2 / expected).sum() < 45.3   # chi-square(19) 99.9 % quantile


RECOMPUTED = {   # the same scores with the round-off another process, order of operations or BLAS gives
    "relative 1e-15 up": lambda s: s * (1 + 1e-15),
    "relative 1e-15 down": lambda s: s * (1 - 1e-15),
    "another formula for the same value": lambda s: np.sqrt(s) ** 2,
}


@pytest.fixture(scope="module")
def tuned(plateaus):
    scores, keys = plateaus
    return RateTuner(target=0.2).fit(scores[:CERTIFY], tie_keys=keys[:CERTIFY], tie_seed=3).certificate_


@pytest.mark.parametrize("recompute", RECOMPUTED.values(), ids=RECOMPUTED.keys())
def test_a_score_recomputed_with_round_off_gets_the_tuned_decision(recompute, plateaus, tuned):
    scores, keys = plateaus
    recomputed = recompute(scores)
    assert not np.array_equal(recomputed, scores)
    rule = (tuned.threshold, tuned.tie_break)
    assert np.array_equal(defer_mask(recomputed, *rule, keys), defer_mask(scores, *rule, keys))
    assert np.array_equal(tied(recomputed, tuned.threshold), scores == tuned.threshold)


@pytest.mark.parametrize("recompute", RECOMPUTED.values(), ids=RECOMPUTED.keys())
def test_tuning_on_recomputed_scores_writes_the_same_canonical_rule(recompute, plateaus, tuned):
    scores, keys = plateaus
    again = RateTuner(target=0.2).fit(recompute(scores[:CERTIFY]), tie_keys=keys[:CERTIFY], tie_seed=3).certificate_
    assert (again.threshold, again.tie_break) == (tuned.threshold, tuned.tie_break)
    assert canonical(again.threshold) == again.threshold


def test_a_learn_then_test_grid_is_canonical(plateaus):
    scores, keys = plateaus
    grid = threshold_grid(scores[CERTIFY:2 * CERTIFY] * (1 + 1e-15), tie_keys=keys[CERTIFY:2 * CERTIFY])
    assert np.array_equal(canonical(grid.threshold), grid.threshold) and set(grid.threshold[:-1]) <= set(LEVELS)
    plain = AcceptedErrorTuner(alpha=0.5, delta=0.1, grid=[0.1 + 0.2]).fit(scores[:CERTIFY], np.ones(CERTIFY))
    assert plain.certificate_.threshold == 0.3


def test_canonical_scores_are_ordered_and_a_canonical_threshold_stays_itself():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 4000) * 10.0 ** rng.integers(-12, 9, 4000),
                             [0.0, -0.0, 5e-10, -5e-10, 1e6, -1e6, 999999.9999999999, np.inf, -np.inf]])
    ordered = np.sort(values)
    assert (np.diff(canonical(ordered)) >= 0).all()
    assert np.array_equal(canonical(canonical(values)), canonical(values))
    assert np.array_equal(canonical(LEVELS), LEVELS)
    assert np.isnan(canonical(np.nan))


def test_the_sweep_point_at_the_tuned_rate_is_the_tuned_rule(plateaus, tuned):
    scores, keys = plateaus[0][:CERTIFY], plateaus[1][:CERTIFY]
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, CERTIFY)
    small_pred, expert_pred = np.where(rng.random(CERTIFY) < 0.7, y, 1 - y), np.where(rng.random(CERTIFY) < 0.9, y, 1 - y)
    cost = rng.uniform(0.5, 2.0, CERTIFY)
    point = sweep(scores, small_pred, expert_pred, y, expert_cost=cost, tie_keys=keys).at_rate(
        tuned.achieved["defer_rate"])
    defer = defer_mask(scores, tuned.threshold, tuned.tie_break, keys)
    assert (point["threshold"], point["tie_break"]) == (tuned.threshold, tuned.tie_break)
    assert point["defer_rate"] == pytest.approx(defer.mean())
    assert point["accuracy"] == pytest.approx(np.mean(np.where(defer, expert_pred, small_pred) == y))
    assert point["cost_per_1k"] == pytest.approx(1000 * cost[defer].sum() / CERTIFY)


def test_a_missing_value_hashes_alike_however_its_nan_was_made():
    from policies.ties import tie_keys

    rows = np.array([[1.0, np.nan], [1.0, -np.nan], [1.0, np.inf - np.inf], [1.0, 2.0]])
    keys = tie_keys(rows, seed=0)
    assert keys[0] == keys[1] == keys[2] != keys[3]
