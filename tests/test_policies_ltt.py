"""Learn-then-Test against brute-force references written as plain loops, one rule at a time.

The joint fixed-sequence walk must stop at the first rule whose error test fails: a walk that
skips failures and keeps the last passing rule certifies rules the procedure never reached. The
cases are random small certify sets with non-monotone errors, where the two walks often differ;
the test checks that they do, so it would catch the wrong walk.
"""

import math

import numpy as np
import pytest
from scipy.stats import binom

from policies import AcceptedErrorTuner, JointTuner, threshold_grid, tie_keys


def _accepted(scores, keys, threshold, tie_break):
    return [i for i in range(len(scores))
            if scores[i] < threshold or (scores[i] == threshold and keys[i] <= tie_break)]


def reference_joint(scores, correct, keys, grid, alpha, max_rate, delta, stop_at_first_failure=True):
    """The fixed-sequence procedure, rule by rule in the grid's order (deferring most first)."""
    n, level, chosen = len(scores), delta / 2, None
    for threshold, tie_break in zip(grid.threshold, grid.tie_break):
        accepted = _accepted(scores, keys, threshold, tie_break)
        errors = sum(not correct[i] for i in accepted)
        if binom.cdf(errors, len(accepted), alpha) > level:
            if stop_at_first_failure:
                break
            continue
        if binom.cdf(n - len(accepted), n, max_rate) <= level:
            chosen = (threshold, tie_break)
    return chosen


def reference_bonferroni(scores, correct, keys, grid, alpha, delta):
    level, chosen = delta / len(grid.threshold), None
    for threshold, tie_break in zip(grid.threshold, grid.tie_break):
        accepted = _accepted(scores, keys, threshold, tie_break)
        if binom.cdf(sum(not correct[i] for i in accepted), len(accepted), alpha) <= level:
            chosen = (threshold, tie_break)
    return chosen


def random_case(rng):
    n = int(rng.integers(30, 90))
    scores = rng.choice([0.1, 0.2, 0.35, 0.5, 0.8], size=n)
    keys = tie_keys([f"case sample {rng.integers(1 << 40)}" for _ in range(n)], seed=0)
    wrong_rate = rng.uniform(0, 0.5, 5)[np.searchsorted([0.1, 0.2, 0.35, 0.5, 0.8], scores)]  # non-monotone
    correct = rng.random(n) >= wrong_rate
    fit = rng.choice([0.1, 0.2, 0.35, 0.5, 0.8], size=60)
    grid = threshold_grid(fit, n_grid=int(rng.integers(4, 12)), max_rate=float(rng.uniform(0.3, 1.0)),
                          tie_keys=tie_keys([f"fit {rng.integers(1 << 40)}" for _ in range(60)], seed=0))
    return scores, correct, keys, grid


def _rule(tuner, scores, correct, keys):
    cut = tuner.fit_cuts(scores, correct, tie_keys=keys)
    threshold = float(cut.threshold[0])
    return None if math.isnan(threshold) else (threshold, float(cut.tie_break[0]))


def test_the_joint_fixed_sequence_walk_is_the_reference_walk_and_not_keep_the_last_passing():
    rng = np.random.default_rng(2024)
    differs = 0
    for _ in range(300):
        scores, correct, keys, grid = random_case(rng)
        alpha, max_rate, delta = rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.6)
        tuner = JointTuner(alpha=alpha, max_rate=max_rate, delta=delta, grid=grid)
        expected = reference_joint(scores, correct, keys, grid, alpha, max_rate, delta)
        assert _rule(tuner, scores, correct, keys) == expected
        differs += expected != reference_joint(scores, correct, keys, grid, alpha, max_rate, delta,
                                               stop_at_first_failure=False)
    assert differs >= 10


def test_bonferroni_learn_then_test_is_the_reference():
    rng = np.random.default_rng(7)
    for _ in range(200):
        scores, correct, keys, grid = random_case(rng)
        alpha, delta = rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.6)
        tuner = AcceptedErrorTuner(alpha=alpha, delta=delta, grid=grid)
        assert _rule(tuner, scores, correct, keys) == reference_bonferroni(scores, correct, keys, grid, alpha, delta)


def test_the_grid_does_not_move_with_the_certify_data():
    rng = np.random.default_rng(1)
    scores, correct, keys, grid = random_case(rng)
    tuner = JointTuner(alpha=0.3, max_rate=0.9, delta=0.5, grid=grid)
    for _ in range(20):
        shuffled = rng.permutation(len(scores))
        rule = _rule(tuner, scores[shuffled], correct[shuffled], keys[shuffled])
        assert rule is None or rule[0] in grid.threshold
    with pytest.raises(ValueError, match="needs grid"):
        JointTuner().fit(scores, correct)
