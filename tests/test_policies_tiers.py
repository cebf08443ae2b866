"""N-tier cascades over arrays: routing, accounting, per-hop tuning, ties split as certified."""

import numpy as np
import pytest

from policies import Cascade, ConfidencePolicy, CostTuner, Hop, RateTuner, simulate
from policies.ties import defer_mask, tie_keys, tied


def three_tiers(n, seed):
    """small -> medium -> large: each tier is calibrated and more accurate (and dearer) than the last."""
    rng = np.random.default_rng(seed)
    label = rng.random(n) < 0.5
    features, correct = [], []
    for scale in (1.5, 3.0, 6.0):
        logit = np.where(label, 1, -1) * scale * np.abs(rng.normal(0.6, 0.6, n)) + rng.normal(0, 1, n)
        positive = 1 / (1 + np.exp(-logit))
        features.append(np.column_stack([1 - positive, positive]))
        correct.append((positive > 0.5) == label)
    return features, correct, [0.01, 0.2, 1.0]


def test_each_sample_is_answered_by_the_first_tier_whose_hop_keeps_it():
    cascade = Cascade([Hop(ConfidencePolicy(), 0.2), Hop(ConfidencePolicy(), 0.1)], tiers=["small", "medium", "large"])
    small = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.7, 0.3]])
    medium = np.array([[0.5, 0.5], [0.95, 0.05], [0.7, 0.3], [0.8, 0.2]])
    assert cascade.route([small, medium]).tolist() == [0, 1, 2, 2]


def test_later_hops_score_only_the_samples_that_reach_them():
    class Counting(ConfidencePolicy):
        seen = 0

        def score(self, features):
            Counting.seen += len(features)
            return super().score(features)

    cascade = Cascade([Hop(ConfidencePolicy(), 0.2), Hop(Counting(), 0.1)])
    small = np.array([[0.9, 0.1], [0.6, 0.4], [0.99, 0.01]])
    cascade.route([small, small])
    assert Counting.seen == 1


def test_evaluate_pays_for_every_tier_a_sample_visits():
    cascade = Cascade([Hop(ConfidencePolicy(), 0.2), Hop(ConfidencePolicy(), 0.1)])
    small = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45]])
    medium = np.array([[0.9, 0.1], [0.95, 0.05], [0.7, 0.3]])
    report = cascade.evaluate([small, medium, medium], [[1, 0, 0], [1, 1, 0], [1, 1, 1]], [0.01, 0.2, 1.0])
    assert report["accuracy"] == pytest.approx(1.0)
    assert report["answered"] == {tier: pytest.approx(1 / 3) for tier in ("tier-0", "tier-1", "tier-2")}
    assert report["cost_per_1k"] == pytest.approx(1000 * (0.01 + 0.21 + 1.21) / 3)


def test_tune_certifies_each_hop_on_the_calibration_samples_that_reach_it():
    features, correct, cost = three_tiers(3000, seed=0)
    cascade = Cascade.tune(
        [ConfidencePolicy(), ConfidencePolicy()], [RateTuner(0.3), RateTuner(0.2)], features, correct, cost
    )
    answered = cascade.route(features)
    reached_hop_1 = answered >= 1
    assert np.mean(reached_hop_1) <= 0.3
    assert np.mean(answered[reached_hop_1] == 2) <= 0.2
    assert [hop.certificate.target for hop in cascade.hops] == [{"defer_rate": 0.3}, {"defer_rate": 0.2}]
    assert cascade.hops[1].certificate.n == int(reached_hop_1.sum())


def test_three_tier_cascade_is_more_accurate_than_small_and_cheaper_than_large():
    calibration, test = three_tiers(3000, seed=0), three_tiers(20000, seed=1)
    cascade = Cascade.tune([ConfidencePolicy(), ConfidencePolicy()], [RateTuner(0.3), RateTuner(0.3)], *calibration)
    report = cascade.evaluate(*test)
    features, correct, cost = test
    assert report["accuracy"] > correct[0].mean() + 0.02
    assert report["cost_per_1k"] < 1000 * sum(cost) / 2


def test_tuning_passes_the_next_tiers_cost_to_a_cost_budget():
    data = simulate(2000, seed=3)
    cascade = Cascade.tune(
        [ConfidencePolicy(n_classes=2)], [CostTuner(target_per_1k=100.0, max_expert_cost=20.0)], [data.features],
        [data.small_correct, data.expert_correct], [0.0, data.expert_cost],
    )
    assert cascade.hops[0].certificate.bound["cost_per_1k"] <= 100.0


def test_a_cascade_needs_one_tier_name_more_than_hops():
    with pytest.raises(ValueError, match="1 hops connect 2 tiers"):
        Cascade([Hop(ConfidencePolicy(), 0.2)], tiers=["small", "medium", "large"])


def plateau_tier(n, seed):
    """A tier whose calibrated top probability takes 5 values (isotonic plateaus): confidence scores
    0.45, 0.35, 0.25, 0.15, 0.05 for 10 %, 15 %, 25 %, 25 %, 25 % of the samples."""
    rng = np.random.default_rng(seed)
    top = rng.choice([0.55, 0.65, 0.75, 0.85, 0.95], size=n, p=[0.10, 0.15, 0.25, 0.25, 0.25])
    return np.column_stack([top, 1 - top]), rng.random(n) < top


def test_a_hop_splits_a_tie_the_way_its_certificate_says():
    features, correct = plateau_tier(600, seed=0)
    texts = [f"request {i}" for i in range(600)]
    policy = ConfidencePolicy()
    scores, keys = policy.score(features), tie_keys(texts, seed=4)
    certificate = RateTuner(0.3).fit(scores, correct, tie_keys=keys, tie_seed=4).certificate_
    hop = Hop(policy, certificate.threshold, certificate)
    defer = hop.defer(features, texts)
    at_threshold = tied(scores, hop.threshold)
    assert defer[at_threshold].any() and not defer[at_threshold].all()
    assert np.array_equal(defer, defer_mask(scores, certificate.threshold, certificate.tie_break, keys))
    assert defer.mean() == certificate.achieved["defer_rate"]


def test_a_hop_that_splits_ties_needs_the_samples():
    features, correct = plateau_tier(600, seed=0)
    policy = ConfidencePolicy()
    keys = tie_keys([f"request {i}" for i in range(600)], seed=4)
    certificate = RateTuner(0.3).fit(policy.score(features), correct, tie_keys=keys, tie_seed=4).certificate_
    with pytest.raises(ValueError, match="pass the 600 samples"):
        Hop(policy, certificate.threshold, certificate).defer(features)


def test_tune_splits_ties_with_the_samples_and_route_serves_the_certified_rates():
    (small, small_correct), (medium, medium_correct) = plateau_tier(1000, seed=1), plateau_tier(1000, seed=2)
    rows = np.random.default_rng(3).normal(size=(1000, 4))   # tabular samples: keys hash the feature rows
    cascade = Cascade.tune([ConfidencePolicy(), ConfidencePolicy()], [RateTuner(0.3), RateTuner(0.2)],
                           [small, medium], [small_correct, medium_correct], samples=rows, tie_seed=4)
    first, second = (hop.certificate for hop in cascade.hops)
    assert (first.tie_seed, second.tie_seed) == (4, 4) and first.tie_break < 1 and second.tie_break < 1
    answer = cascade.route([small, medium], samples=rows)
    reached = answer >= 1
    assert reached.mean() == first.achieved["defer_rate"] >= 0.9 * 0.3   # a tie at the threshold does not starve it
    assert (answer[reached] == 2).mean() == second.achieved["defer_rate"] >= 0.9 * 0.2


def test_tune_takes_samples_and_tie_seed_together():
    features, correct = plateau_tier(100, seed=0)
    with pytest.raises(ValueError, match="samples and tie_seed go together"):
        Cascade.tune([ConfidencePolicy()], [RateTuner(0.3)], [features], [correct, correct], tie_seed=4)
