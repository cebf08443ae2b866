"""Budget guarantees on real detector outputs: SpamAssassin, 200 random calibration/test splits.

Small tier: TF-IDF + logistic regression trained on only 300 labelled mails (so it makes real
mistakes), Platt-calibrated on a held-out slice of the train split. Expert: a cosine kNN on the
same TF-IDF space trained on a disjoint slice of the train split (a real second model). Expert
cost: a token-priced call, prompt tokens estimated from the mail length (capped at 384).
The pool is the loader's calibration + test splits (2,418 mails); each of the 200 splits
calibrates on 400 of them and measures on the other 2,018.

Slack (as in test_policies_adherence): means may exceed an in-expectation target by 3 standard
errors; violation shares may exceed δ up to the 99.9% quantile of Binomial(200, δ) / 200. Here the
test parts are finite, so their own sampling noise is part of what that slack absorbs.
"""

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from cascade import data
from cascade.types import CostModel
from policies import (
    AcceptedErrorTuner, ConfidencePolicy, CostTuner, DeferralData, EntropyPolicy, JointTuner, MarginPolicy,
    OraclePolicy, PosthocPolicy, RandomPolicy, RateTuner, budget_adherence, deferral_curve, threshold_grid,
)

SPLITS, CALIBRATION = 200, 400
MAX_PROMPT_TOKENS = 384.0 + 40.0   # the prompt is capped there and priced at 1.0 per 1k tokens


@pytest.fixture(scope="module")
def spam(spamassassin):
    """Real outcomes; the ``spamassassin`` fixture fetches the data first, so missing data fail loudly."""
    train = data.load("spamassassin", split="train", seed=0)
    pool = [data.load("spamassassin", split=split, seed=0) for split in ("calibration", "test")]
    order = np.random.default_rng(0).permutation(len(train))
    small_part, calibrator_part, policy_part, expert_part = np.split(order, [300, 800, 1800])
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=20000).fit(train.texts)
    train_x = vectorizer.transform(train.texts)
    small = LogisticRegression(C=10.0, max_iter=1000).fit(train_x[small_part], train.y[small_part])
    calibrated = CalibratedClassifierCV(FrozenEstimator(small), method="sigmoid")
    calibrated.fit(train_x[calibrator_part], train.y[calibrator_part])
    expert = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(train_x[expert_part], train.y[expert_part])

    def outcomes(texts, labels):
        x = vectorizer.transform(texts)
        probabilities = calibrated.predict_proba(x)
        tokens = np.minimum(np.array([len(t) for t in texts]) / 4.0 + 40.0, MAX_PROMPT_TOKENS)
        cost = CostModel(expert_per_call=0.0, expert_per_1k_prompt_tokens=1.0).expert_cost(prompt_tokens=tokens)
        return DeferralData(probabilities, probabilities.argmax(1) == labels, expert.predict(x) == labels, cost)

    policy_split = outcomes([train.texts[i] for i in policy_part], train.y[policy_part])
    pool_split = outcomes(pool[0].texts + pool[1].texts, np.concatenate([pool[0].y, pool[1].y]))
    return policy_split, pool_split


def fit_part_grid(spam, max_rate=1.0):
    """Learn-then-Test's thresholds, placed on the policy split (never on the pool it certifies on)."""
    return threshold_grid(ConfidencePolicy().score(spam[0].features), max_rate=max_rate)


@pytest.fixture(scope="module")
def confidence_scores(spam):
    return ConfidencePolicy().score(spam[1].features)


def adherence(tuner, spam, scores):
    pool = spam[1]
    return budget_adherence(
        tuner, scores, pool.small_correct, pool.expert_cost, calibration_size=CALIBRATION, n_splits=SPLITS, seed=3
    ).summary()


def allowed_violation_rate(delta):
    return binom.ppf(0.999, SPLITS, delta) / SPLITS


def test_the_small_tier_makes_real_mistakes_the_expert_can_fix(spam):
    pool = spam[1]
    assert 0.85 < pool.small_correct.mean() < 0.98
    assert np.mean(~pool.small_correct & pool.expert_correct) > 0.01


def test_crc_rate_mean_realised_deferral_is_at_most_the_target(spam, confidence_scores):
    stats = adherence(RateTuner(target=0.15), spam, confidence_scores)["metrics"]["defer_rate"]
    assert stats["mean"] <= 0.15 + 3 * stats["standard_error"]


def test_high_probability_rate_is_violated_in_at_most_delta_of_splits(spam, confidence_scores):
    summary = adherence(RateTuner(target=0.15, delta=0.1), spam, confidence_scores)
    assert summary["violation_rate"] <= allowed_violation_rate(0.1)


def test_cost_per_1k_mean_is_at_most_the_target(spam, confidence_scores):
    stats = adherence(CostTuner(target_per_1k=20.0, max_expert_cost=MAX_PROMPT_TOKENS / 1000.0), spam,
                      confidence_scores)["metrics"]["cost_per_1k"]
    assert stats["mean"] <= 20.0 + 3 * stats["standard_error"]


def test_accepted_error_exceeds_alpha_in_at_most_delta_of_splits(spam, confidence_scores):
    summary = adherence(AcceptedErrorTuner(alpha=0.03, delta=0.1, grid=fit_part_grid(spam)), spam, confidence_scores)
    assert summary["refusal_rate"] < 0.1
    assert summary["violation_rate"] <= allowed_violation_rate(0.1)


def test_joint_target_is_violated_in_at_most_delta_of_splits(spam, confidence_scores):
    tuner = JointTuner(alpha=0.025, max_rate=0.3, delta=0.1, grid=fit_part_grid(spam, max_rate=0.3))
    summary = adherence(tuner, spam, confidence_scores)
    assert summary["refusal_rate"] < 0.1
    assert summary["violation_rate"] <= allowed_violation_rate(0.1)


def test_guarantees_hold_for_the_posthoc_policy_on_real_outputs(spam):
    policy_split, pool = spam
    policy = PosthocPolicy().fit(policy_split.features, policy_split.small_correct, policy_split.expert_correct)
    summary = adherence(RateTuner(target=0.15, delta=0.1), spam, policy.score(pool.features))
    assert summary["violation_rate"] <= allowed_violation_rate(0.1)


def test_oracle_dominates_every_policy_on_real_outputs(spam):
    policy_split, pool = spam
    gain_scores = OraclePolicy().score(pool.features, pool.small_correct, pool.expert_correct)
    oracle = deferral_curve(gain_scores, pool.small_correct, pool.expert_correct)
    for policy in (ConfidencePolicy(), MarginPolicy(), EntropyPolicy(), RandomPolicy(seed=0), PosthocPolicy()):
        policy.fit(policy_split.features, policy_split.small_correct, policy_split.expert_correct)
        curve = deferral_curve(policy.score(pool.features), pool.small_correct, pool.expert_correct)
        assert np.all(oracle >= curve - 1e-12), type(policy).__name__


def test_confidence_beats_random_deferral_on_real_outputs(spam, confidence_scores):
    pool = spam[1]
    random = RandomPolicy(seed=0).score(pool.features)
    at = int(0.15 * len(pool))
    assert (deferral_curve(confidence_scores, pool.small_correct, pool.expert_correct)[at]
            > deferral_curve(random, pool.small_correct, pool.expert_correct)[at] + 0.005)
