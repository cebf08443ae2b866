"""The learned post-hoc policy predicts the gain of deferring, including where the expert is weak."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from sklearn.exceptions import NotFittedError

from policies import ConfidencePolicy, LearnedPolicy, PosthocPolicy, deferral_curve, deferral_gain, simulate


@pytest.fixture(autouse=True)
def single_openmp_thread():
    """Gradient boosting's OpenMP threads spin-wait; on a busy 2-core machine one thread is far steadier."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def fit_split():
    return simulate(4000, seed=1)


@pytest.fixture(scope="module")
def held_out():
    return simulate(20000, seed=2)


def accuracy_at(policy, data, rate):
    curve = deferral_curve(policy.score(data.features), data.small_correct, data.expert_correct)
    return curve[int(rate * len(data))]


@pytest.mark.parametrize("model", ["logistic", "gradient-boosting", "outcomes"])
def test_posthoc_beats_confidence_when_the_expert_has_a_weak_domain(model, fit_split, held_out):
    policy = PosthocPolicy(model=model, n_classes=2)
    policy.fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
    confidence = ConfidencePolicy(n_classes=2)
    assert accuracy_at(policy, held_out, 0.2) > accuracy_at(confidence, held_out, 0.2) + 0.01


def test_posthoc_score_is_the_expected_gain(fit_split):
    policy = PosthocPolicy(n_classes=2).fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
    scores = policy.score(fit_split.features)
    assert scores.min() >= -1 and scores.max() <= 1
    gain = deferral_gain(fit_split.small_correct, fit_split.expert_correct)
    assert gain[scores > 0.3].mean() > 0.3 > gain[scores < 0].mean()


def test_the_outcomes_model_is_the_learned_policys_gain_model(fit_split, held_out):
    outcomes = PosthocPolicy(model="outcomes", n_classes=2)
    outcomes.fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
    learned = LearnedPolicy(n_classes=2, choice="learned")
    learned.fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
    assert np.array_equal(outcomes.score(held_out.features), learned.score(held_out.features))


def test_the_outcomes_model_learns_even_where_the_gain_never_varies():
    policy = PosthocPolicy(model="outcomes").fit(np.full((10, 2), 0.5), np.ones(10), np.ones(10))
    assert np.allclose(policy.score(np.full((3, 2), 0.5)), 0.0)


def test_cost_aware_posthoc_buys_more_accuracy_for_the_same_spend(fit_split, held_out):
    plain = PosthocPolicy(n_classes=2).fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
    per_cost = PosthocPolicy(n_classes=2).fit(
        fit_split.features, fit_split.small_correct, fit_split.expert_correct, cost=fit_split.expert_cost
    )

    def accuracy_for_spend(policy, spend_per_request=0.15):
        order = np.argsort(-policy.score(held_out.features))
        deferred = np.searchsorted(np.cumsum(held_out.expert_cost[order]), spend_per_request * len(held_out))
        gain = deferral_gain(held_out.small_correct, held_out.expert_correct)[order]
        return held_out.small_correct.mean() + gain[:deferred].sum() / len(held_out)

    assert accuracy_for_spend(per_cost) > accuracy_for_spend(plain) + 0.003


def test_posthoc_needs_positive_costs(fit_split):
    with pytest.raises(ValueError, match="cost must be positive"):
        PosthocPolicy(n_classes=2).fit(
            fit_split.features, fit_split.small_correct, fit_split.expert_correct, cost=np.zeros(len(fit_split))
        )


def test_posthoc_refuses_a_split_where_the_gain_never_varies():
    with pytest.raises(ValueError, match="single value"):
        PosthocPolicy().fit(np.full((10, 2), 0.5), np.ones(10), np.ones(10))


@pytest.mark.parametrize("model, state", [("logistic", "estimator_"), ("outcomes", "coef_")])
def test_posthoc_must_be_fitted_before_scoring(model, state):
    with pytest.raises(NotFittedError, match=f"missing \\['{state}', 'n_features_in_'\\]"):
        PosthocPolicy(model=model).score(np.full((3, 2), 0.5))


def test_posthoc_rejects_an_unknown_model(fit_split):
    with pytest.raises(ValueError, match="unknown model 'svm'"):
        PosthocPolicy(model="svm").fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
