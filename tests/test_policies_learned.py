"""The learned policy: wins where the expert is a specialist, falls back to Chow's rule where it cannot learn."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from policies import ConfidencePolicy, LearnedPolicy, deferral_area, deferral_gain, load_policy, make_policy, simulate


@pytest.fixture(scope="module")
def fit_split():
    return simulate(3000, seed=1)


@pytest.fixture(scope="module")
def held_out():
    return simulate(20000, seed=2)


def area(policy, data, max_rate=0.5):
    return deferral_area(policy.score(data.features), deferral_gain(data.small_correct, data.expert_correct), max_rate)


def fit(data, n=None, columns=None, **params):
    n = len(data) if n is None else n
    features = data.features[:n] if columns is None else data.features[:n, columns]
    return LearnedPolicy(n_classes=2, **params).fit(features, data.small_correct[:n], data.expert_correct[:n])


def test_learns_where_the_expert_is_weak_and_beats_the_rule(fit_split, held_out):
    policy = fit(fit_split)
    assert policy.choice_ in ("learned", "blend")
    assert area(policy, held_out) > area(ConfidencePolicy(n_classes=2), held_out) + 0.01
    assert "over the rule" in policy.choice_reason_ and policy.cv_["advantage"][policy.choice_]["mean"] > 0


def test_too_few_samples_serve_the_rule_exactly(fit_split, held_out):
    policy = fit(fit_split, n=150)
    assert policy.choice_ == "rule" and "150 fitting samples < min_samples=200" in policy.choice_reason_
    assert np.array_equal(policy.score(held_out.features), ConfidencePolicy(n_classes=2).score(held_out.features))


def test_too_few_samples_the_expert_fixes_serve_the_rule():
    data = simulate(1000, seed=3)
    expert = data.small_correct.copy()
    expert[np.flatnonzero(~data.small_correct)[:5]] = True
    policy = LearnedPolicy(n_classes=2).fit(data.features, data.small_correct, expert)
    assert policy.choice_ == "rule" and "5 samples where the expert fixes" in policy.choice_reason_


def test_without_signal_beyond_the_probabilities_the_rule_is_kept(fit_split):
    policy = fit(fit_split, columns=[0, 1])
    assert policy.choice_ == "rule"
    assert "not more than 2 s.e. better" in policy.choice_reason_ or "below the rule at" in policy.choice_reason_


def test_forced_choices_score_as_documented(fit_split, held_out):
    learned, blend = fit(fit_split, choice="learned"), fit(fit_split, choice="blend")
    top = held_out.features[:, :2].max(axis=1)
    expected = 0.5 * learned.score(held_out.features) + 0.5 * (fit_split.expert_correct.mean() - top)
    assert np.allclose(blend.score(held_out.features), expected)
    assert learned.choice_reason_ == "forced by the 'choice' parameter"


def test_learned_scores_are_gains_in_minus_one_to_one(fit_split, held_out):
    scores = fit(fit_split, choice="learned").score(held_out.features)
    gain = deferral_gain(held_out.small_correct, held_out.expert_correct)
    assert scores.min() >= -1 and scores.max() <= 1
    assert gain[scores > 0.3].mean() > 0.3 > gain[scores < 0].mean()


@pytest.mark.parametrize("n", [150, 3000])
def test_round_trip_keeps_the_choice_and_the_scores(fit_split, held_out, n, tmp_path):
    policy = fit(fit_split, n=n)
    policy.save(tmp_path)
    loaded = load_policy(tmp_path)
    assert (loaded.choice_, loaded.choice_reason_) == (policy.choice_, policy.choice_reason_)
    assert np.array_equal(loaded.score(held_out.features), policy.score(held_out.features))


def test_unfitted_policy_says_so():
    with pytest.raises(NotFittedError, match="LearnedPolicy is not fitted"):
        LearnedPolicy(n_classes=2).score(np.full((3, 4), 0.5))


def test_wrong_feature_count_is_named(fit_split):
    policy = fit(fit_split)
    with pytest.raises(ValueError, match="fitted on 4 feature columns, got 3"):
        policy.score(fit_split.features[:, :3])


def test_bad_parameters_are_named(fit_split):
    with pytest.raises(ValueError, match="unknown choice 'best'"):
        fit(fit_split, choice="best")
    with pytest.raises(ValueError, match="max_rate must be in"):
        fit(fit_split, max_rate=0.0)


def test_registry_builds_it_with_the_probability_count():
    assert make_policy("learned", n_classes=3).get_params()["n_classes"] == 3


def test_area_counts_tied_scores_at_their_expected_value():
    gain = np.array([1.0, 0.0, 0.0, -1.0, 1.0, 1.0])
    ties = np.zeros(6)
    assert deferral_area(ties, gain) == pytest.approx(deferral_area(ties, gain[::-1]))
    assert deferral_area(ties, gain) == pytest.approx(np.mean(np.arange(7) / 6) * gain.mean())
    assert deferral_area(-np.arange(6.0), gain, max_rate=0.5) == pytest.approx(np.mean([0, 1, 1, 1]) / 6)


def test_saved_learned_policy_is_json_and_one_array_file(fit_split, tmp_path):
    fit(fit_split).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.safetensors", "manifest.json", "policy.json"]


@pytest.mark.parametrize("seed", range(4))
def test_a_learned_candidate_is_served_only_if_it_wins_by_two_standard_errors_and_loses_at_no_guard_rate(seed):
    data = simulate(800, seed=10 + seed)
    policy = LearnedPolicy(n_classes=2, random_state=seed).fit(data.features, data.small_correct, data.expert_correct)
    rates = policy.cv_["advantage_at"]["learned"]
    assert list(rates) == ["0.05", "0.1", "0.2", "0.3"]
    for name in ("learned", "blend"):
        advantage = policy.cv_["advantage"][name]
        wins = advantage["mean"] > 2 * advantage["standard_error"] and min(policy.cv_["advantage_at"][name].values()) >= 0
        if policy.choice_ == name:
            assert wins
        elif wins:
            assert policy.choice_ != "rule"


def test_cross_fitted_rows_teach_the_models_but_the_choice_is_made_on_rows_drawn_like_serving_traffic(fit_split):
    serving_like = np.arange(len(fit_split)) < 1000
    policy = LearnedPolicy(n_classes=2).fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct,
                                            exchangeable=serving_like)
    assert policy.n_fit_ == len(fit_split) and policy.cv_["validated_on"] == 1000
    assert f"over 1000 of {len(fit_split)} samples" in policy.choice_reason_
    few = LearnedPolicy(n_classes=2).fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct,
                                         exchangeable=np.arange(len(fit_split)) < 150)
    assert few.choice_ == "rule" and "150 samples drawn like serving traffic" in few.choice_reason_
    with pytest.raises(ValueError, match="exchangeable has 10 entries, features have 3000 rows"):
        LearnedPolicy(n_classes=2).fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct,
                                       exchangeable=np.ones(10, dtype=bool))
