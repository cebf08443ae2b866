"""Confidence rules: fixed functions of calibrated probabilities, higher = less sure."""

import numpy as np
import pytest

from policies import ConfidencePolicy, EntropyPolicy, MarginPolicy

PROBS = np.array([[0.9, 0.1], [0.5, 0.5], [1.0, 0.0]])


def test_confidence_score_is_one_minus_max_probability():
    assert ConfidencePolicy().score(PROBS) == pytest.approx([0.1, 0.5, 0.0])


def test_margin_score_is_one_minus_gap_between_top_two_classes():
    probs = np.array([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])
    assert MarginPolicy().score(probs) == pytest.approx([0.7, 1.0])


def test_entropy_score_is_one_for_uniform_and_zero_for_certain():
    assert EntropyPolicy().score(PROBS)[[1, 2]] == pytest.approx([1.0, 0.0])


def test_every_rule_ranks_the_uniform_sample_first():
    for policy in (ConfidencePolicy(), MarginPolicy(), EntropyPolicy()):
        assert np.argmax(policy.score(PROBS)) == 1


def test_scores_lie_in_unit_interval_for_any_probabilities():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=1000)
    for policy in (ConfidencePolicy(), MarginPolicy(), EntropyPolicy()):
        scores = policy.score(probs)
        assert scores.shape == (1000,) and scores.min() >= 0 and scores.max() <= 1 + 1e-12


def test_n_classes_ignores_extra_feature_columns():
    features = np.column_stack([PROBS, np.full(3, 7.0)])
    assert ConfidencePolicy(n_classes=2).score(features) == pytest.approx(ConfidencePolicy().score(PROBS))


def test_one_dimensional_input_is_a_binary_positive_probability():
    assert ConfidencePolicy().score(np.array([0.9, 0.5])) == pytest.approx([0.1, 0.5])


def test_rules_score_without_fit():
    assert len(MarginPolicy().score(PROBS)) == 3


def test_fitted_rule_rejects_a_different_number_of_columns():
    policy = ConfidencePolicy().fit(PROBS, [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="fitted on 2 feature columns"):
        policy.score(np.ones((2, 3)) / 3)


def test_fit_rejects_outcomes_of_the_wrong_length():
    with pytest.raises(ValueError, match="small_correct has 2 entries"):
        ConfidencePolicy().fit(PROBS, [1, 1], [1, 1, 1])
