"""One Learn-then-Test certificate for a whole N-tier rule with abstention (policies.tuners.chain).

The references are plain loops, one rule and one sample at a time. Validity is checked against
the exact finite-sample null: certify sets are drawn with replacement from a fixed finite table,
so the true risks of every grid rule are the table's own metrics, exactly.
"""

import math
from itertools import product

import numpy as np
import pytest
from scipy.stats import binom, multinomial

from policies import (
    AcceptedErrorTuner, ConfidencePolicy, InfeasibleTarget, JointTuner, simulate, threshold_grid,
)
from policies.tuners.chain import (
    ChainGrid, ChainRisks, ChainTuner, apply_chain, chain_metrics, hoeffding_bentkus_p_value,
)

COSTS = np.array([1.0, 4.0, 20.0])


def population(size, seed, tiers=3):
    """Scores on a 0.01 grid (ties at thresholds happen); later tiers err less on hard samples."""
    rng = np.random.default_rng(seed)
    hard = rng.random((size, 1))
    scores = np.round(hard + rng.normal(0, 0.15, (size, tiers)), 2)
    correct = rng.random((size, tiers)) > hard * np.array([0.3, 0.15, 0.05, 0.02][:tiers])
    return scores, correct


def route(scores, rule):
    """(tier answering or -1, tiers visited) of one sample, by walking the chain."""
    for tier, (score, threshold) in enumerate(zip(scores, rule)):
        if score <= threshold:
            return tier, tier + 1
    return -1, len(rule)


def reference_metrics(scores, correct, costs, rule):
    answered = wrong = 0
    spent = 0.0
    for i in range(len(scores)):
        tier, visited = route(scores[i], rule)
        spent += sum(costs[i][:visited] if np.ndim(costs) == 2 else costs[:visited])
        answered += tier >= 0
        wrong += tier >= 0 and not correct[i][tier]
    n = len(scores)
    return {"answered_error": wrong / answered if answered else 0.0, "wrong_answer_rate": wrong / n,
            "abstention_rate": 1 - answered / n, "cost_per_1k": 1000 * spent / n}


def reference_p_value(metrics, n, alpha, max_abstention, max_cost_per_1k, cost_range):
    """The largest of the per-risk p-values, each written out from its formula."""
    answered = round(n * (1 - metrics["abstention_rate"]))
    p_values = [binom.cdf(round(metrics["answered_error"] * answered), answered, alpha),
                binom.cdf(round(n * metrics["abstention_rate"]), n, max_abstention)]
    low, high = cost_range
    mean = (metrics["cost_per_1k"] / 1000 - low) / (high - low)
    level = (max_cost_per_1k / 1000 - low) / (high - low)
    tail = min(mean, level)
    kl = tail * math.log(tail / level) + (1 - tail) * math.log((1 - tail) / (1 - level)) if tail > 0 else \
        -math.log(1 - level)
    p_values.append(min(1.0, math.exp(-n * kl), math.e * binom.cdf(math.ceil(n * mean - 1e-9), n, level)))
    return max(p_values)


# Routing and metrics

def test_a_chain_answers_at_the_first_tier_within_its_threshold_and_abstains_past_the_last():
    scores = np.array([[0.2, 0.9, 0.9], [0.5, 0.3, 0.9], [0.5, 0.6, 0.4], [0.5, 0.6, 0.8]])
    answered_by, visited = apply_chain(scores, [0.2, 0.3, 0.4])   # ties at a threshold stay
    assert answered_by.tolist() == [0, 1, 2, -1]
    assert visited.sum(axis=1).tolist() == [1, 2, 3, 3]


def test_apply_chain_is_the_sample_by_sample_walk_for_many_rules_at_once():
    scores, _ = population(200, seed=3)
    rules = np.random.default_rng(4).choice(np.r_[-np.inf, np.unique(scores), np.inf], size=(30, 3))
    answered_by, visited = apply_chain(scores, rules)
    for r, rule in enumerate(rules):
        walked = [route(sample, rule) for sample in scores]
        assert answered_by[r].tolist() == [tier for tier, _ in walked]
        assert visited[r].sum(axis=1).tolist() == [count for _, count in walked]


@pytest.mark.parametrize("tiers, per_sample_costs", [(2, False), (3, False), (3, True), (4, True)])
def test_chain_metrics_and_the_grids_counts_match_the_reference(tiers, per_sample_costs):
    fit_scores, _ = population(300, seed=5, tiers=tiers)
    grid = ChainGrid.from_fit(fit_scores, 4, 0.3)
    rng = np.random.default_rng(6)
    sets = [population(120, seed, tiers) for seed in (7, 8, 9)]
    scores, correct = np.stack([s for s, _ in sets]), np.stack([c for _, c in sets])
    costs = rng.uniform(0.5, 3.0, scores.shape) if per_sample_costs else np.array([1.0, 4.0, 20.0, 60.0])[:tiers]
    counts = grid.counts(scores, correct, costs)
    for m in range(len(sets)):
        set_costs = costs[m] if per_sample_costs else costs
        metrics = chain_metrics(scores[m], correct[m], set_costs, grid.thresholds)
        for r in range(0, len(grid.thresholds), 7):
            expected = reference_metrics(scores[m], correct[m], set_costs, grid.thresholds[r])
            assert {key: float(values[r]) for key, values in metrics.items()} == pytest.approx(expected)
        assert counts.answered[m] == pytest.approx(120 * (1 - metrics["abstention_rate"]))
        assert counts.wrong[m] == pytest.approx(120 * metrics["wrong_answer_rate"])
        assert counts.cost[m] == pytest.approx(120 * metrics["cost_per_1k"] / 1000)


# The grid

def test_the_grid_sits_on_fit_quantiles_with_every_reachable_rule_once():
    fit_scores, _ = population(500, seed=10)
    grid = ChainGrid.from_fit(fit_scores, 4, 0.2)
    for tier in range(3):
        finite = np.unique(grid.thresholds[:, tier][np.isfinite(grid.thresholds[:, tier])])
        assert np.isin(finite, fit_scores[:, tier]).all() and len(finite) == (3 if tier == 2 else 2)
    assert len(np.unique(grid.thresholds, axis=0)) == len(grid.thresholds)
    # a rule answering everything at tier k has one representative, not one per later threshold
    behaviours = {tuple(row) for row in apply_chain(fit_scores, grid.thresholds)[0]}
    assert len(behaviours) == len(grid.thresholds)
    assert np.isposinf(grid.thresholds[:, 2]).any() and np.isneginf(grid.thresholds[:, 0]).any()


def test_a_large_grid_warns_and_a_too_large_one_is_refused():
    fit_scores, _ = population(2000, seed=11, tiers=4)
    with pytest.warns(UserWarning, match="method=.bonferroni. would test each at"):
        ChainGrid.from_fit(fit_scores, 8, 0.2)
    with pytest.raises(ValueError, match="above max_rules=100"):
        ChainGrid.from_fit(fit_scores, 5, 0.2, max_rules=100)


def test_the_path_is_chosen_on_the_fit_part_by_its_p_values():
    fit_scores, fit_correct = population(800, seed=12)
    grid = ChainGrid.from_fit(fit_scores, 4, 0.2, fit_correct=fit_correct, costs=COSTS)
    tuner = ChainTuner(alpha=0.08, max_abstention=0.15, max_cost_per_1k=14000.0, delta=0.2, grid=grid)
    paths = [tuner.fit(*population(600, seed), COSTS).path_.tolist() for seed in (13, 14)]
    assert paths[0] == paths[1] and sorted(paths[0]) == list(range(len(grid.thresholds)))
    fit_p = [reference_p_value(reference_metrics(fit_scores, fit_correct, COSTS, rule), 800, 0.08, 0.15, 14000.0,
                               (1.0, 25.0)) for rule in grid.thresholds[paths[0]]]
    assert np.all(np.diff(fit_p) >= -1e-12)


# The tuner against the reference procedure

def reference_walk(scores, correct, grid, path, alpha, max_abstention, max_cost_per_1k, delta, stop=True):
    passed = []
    for j in path:
        metrics = reference_metrics(scores, correct, COSTS, grid.thresholds[j])
        if reference_p_value(metrics, len(scores), alpha, max_abstention, max_cost_per_1k, (1.0, 25.0)) > delta:
            if stop:
                break
            continue
        passed.append(j)
    return sorted(passed)


def passed_indices(tuner, scores, correct):
    try:
        passed = tuner.fit(scores, correct, COSTS).passed_
    except InfeasibleTarget:
        return []
    return sorted(int(np.flatnonzero((tuner.grid.thresholds == rule).all(axis=1))[0]) for rule in passed)


def test_fixed_sequence_stops_at_the_first_failure_as_the_reference_walk_does():
    rng = np.random.default_rng(15)
    fit_scores, fit_correct = population(300, seed=16)
    grid = ChainGrid.from_fit(fit_scores, 4, 0.3, fit_correct=fit_correct, costs=COSTS)
    differs = 0
    for case in range(25):
        scores, correct = population(int(rng.integers(60, 160)), seed=100 + case)
        alpha, gamma, cost = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.4), rng.uniform(6e3, 2e4)
        path = grid.path(ChainRisks(alpha, gamma, cost, "conditional", (1.0, 25.0)))
        tuner = ChainTuner(alpha=alpha, max_abstention=gamma, max_cost_per_1k=cost, delta=0.3, grid=grid)
        expected = reference_walk(scores, correct, grid, path, alpha, gamma, cost, 0.3)
        assert passed_indices(tuner, scores, correct) == expected
        differs += expected != reference_walk(scores, correct, grid, path, alpha, gamma, cost, 0.3, stop=False)
    assert differs >= 3


def test_bonferroni_passes_every_rule_whose_p_value_is_within_delta_over_the_grid_size():
    rng = np.random.default_rng(17)
    grid = ChainGrid.from_fit(population(300, seed=18)[0], 4, 0.3)
    for case in range(15):
        scores, correct = population(int(rng.integers(100, 300)), seed=200 + case)
        alpha, gamma, cost = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.4), rng.uniform(6e3, 2e4)
        tuner = ChainTuner(alpha=alpha, max_abstention=gamma, max_cost_per_1k=cost, delta=0.5, grid=grid,
                           method="bonferroni")
        level = 0.5 / len(grid.thresholds)
        expected = [j for j, rule in enumerate(grid.thresholds) if reference_p_value(
            reference_metrics(scores, correct, COSTS, rule), len(scores), alpha, gamma, cost, (1.0, 25.0)) <= level]
        assert passed_indices(tuner, scores, correct) == expected


@pytest.mark.parametrize("alpha, max_rate", [(0.1, None), (0.12, 0.6)])
def test_one_hop_whose_last_tier_never_answers_is_the_two_tier_learn_then_test(alpha, max_rate):
    """K=2 with ``a = -inf``: every deferred sample abstains, so the error among answered samples is the
    small tier's accepted error and the abstention rate is the deferral rate."""
    data, fit = simulate(800, seed=5), simulate(600, seed=6)
    policy = ConfidencePolicy(n_classes=2)
    two_tier = threshold_grid(policy.score(fit.features), max_rate=max_rate or 1.0)
    grid = ChainGrid(np.column_stack([two_tier.threshold, np.full(len(two_tier.threshold), -np.inf)]))
    scores = np.column_stack([policy.score(data.features), np.zeros(len(data))])
    correct = np.column_stack([data.small_correct, data.expert_correct])
    if max_rate is None:
        single = AcceptedErrorTuner(alpha=alpha, delta=0.1, grid=two_tier)
    else:
        single = JointTuner(alpha=alpha, max_rate=max_rate, delta=0.1, procedure="bonferroni", grid=two_tier)
    single.fit(scores[:, 0], data.small_correct)
    chain = ChainTuner(alpha=alpha, max_abstention=max_rate, delta=0.1, grid=grid, method="bonferroni")
    chain.fit(scores, correct, [0.0, 1.0])
    assert chain.rule_.tolist() == [single.threshold_, -np.inf]
    assert chain.passed_[:, 0].tolist() == [threshold for threshold, _ in single.certificate_.passed_rules]
    chained, two = chain.certificate_, single.certificate_
    assert chained.bound["answered_error"] == pytest.approx(two.bound["accepted_error"])
    assert chained.achieved["answered_error"] == pytest.approx(two.achieved["accepted_error"])
    if max_rate is not None:
        assert chained.bound["abstention_rate"] == pytest.approx(two.bound["defer_rate"])


# The certificate

@pytest.fixture(scope="module")
def fitted():
    fit_scores, fit_correct = population(1500, seed=20)
    grid = ChainGrid.from_fit(fit_scores, 5, 0.2, fit_correct=fit_correct, costs=COSTS)
    scores, correct = population(2000, seed=21)
    tuner = ChainTuner(alpha=0.07, max_abstention=0.1, max_cost_per_1k=15000.0, grid=grid).fit(scores, correct, COSTS)
    return tuner, scores, correct


def test_the_certificate_reports_the_rules_own_metrics_and_bounds_within_the_targets(fitted):
    tuner, scores, correct = fitted
    certificate = tuner.certificate_
    achieved = {key: float(value) for key, value in chain_metrics(scores, correct, COSTS, tuner.rule_).items()}
    assert certificate.achieved == pytest.approx(achieved)
    assert certificate.holds and set(certificate.bound) == {"answered_error", "abstention_rate", "cost_per_1k"}
    assert all(achieved[key] <= certificate.bound[key] for key in certificate.bound)
    assert certificate.rule == tuner.rule_.tolist() and certificate.n == 2000 and certificate.cost_range == (1.0, 25.0)


def test_the_chosen_rule_is_the_cheapest_passed_rule_on_the_certify_part(fitted):
    tuner, scores, correct = fitted
    assert (tuner.passed_ == tuner.rule_).all(axis=1).any() and len(tuner.passed_) > 1
    costs = chain_metrics(scores, correct, COSTS, tuner.passed_)["cost_per_1k"]
    assert chain_metrics(scores, correct, COSTS, tuner.rule_)["cost_per_1k"] == costs.min()


def test_one_set_and_many_sets_pick_the_same_rule(fitted):
    tuner, _, _ = fitted
    sets = [population(700, seed) for seed in (30, 31, 32, 33)]
    batched = tuner.fit_rules(np.stack([s for s, _ in sets]), np.stack([c for _, c in sets]), COSTS)
    for (scores, correct), rule in zip(sets, batched):
        try:
            assert tuner.fit(scores, correct, COSTS).rule_.tolist() == rule.tolist()
        except InfeasibleTarget:
            assert np.isnan(rule).all()


@pytest.mark.parametrize("max_abstention", [None, 0.1])
def test_an_infeasible_target_names_the_best_certifiable_values_which_are_then_feasible(max_abstention):
    fit_scores, _ = population(600, seed=40)
    grid = ChainGrid.from_fit(fit_scores, 4, 0.2)
    scores, correct = population(1500, seed=41)
    settings = dict(max_abstention=max_abstention, grid=grid, method="bonferroni")
    with pytest.raises(InfeasibleTarget, match="lowest certifiable values among the tested rules") as error:
        ChainTuner(alpha=0.01, **settings).fit(scores, correct, COSTS)
    best = error.value.best["answered_error"]
    assert 0.01 < best < 1
    assert ChainTuner(alpha=best + 1e-9, **settings).fit(scores, correct, COSTS).certificate_.holds


def test_a_cost_below_what_tier_zero_costs_is_infeasible():
    fit_scores, fit_correct = population(600, seed=42)
    grid = ChainGrid.from_fit(fit_scores, 4, 0.2, fit_correct=fit_correct, costs=COSTS)
    with pytest.raises(InfeasibleTarget, match="cost_per_1k") as error:
        ChainTuner(alpha=0.5, max_cost_per_1k=900.0, grid=grid).fit(*population(500, seed=43), COSTS)
    assert error.value.best["cost_per_1k"] > 1000.0


@pytest.fixture(scope="module")
def small_grids():
    fit_scores, fit_correct = population(300, seed=44)
    return {"with fit outcomes": ChainGrid.from_fit(fit_scores, 3, 0.2, fit_correct=fit_correct, costs=COSTS),
            "scores only": ChainGrid.from_fit(fit_scores, 3, 0.2), "none": None}


@pytest.mark.parametrize("grid, change, costs, message", [
    ("with fit outcomes", {}, np.ones((300, 3)), "needs max_request_cost"),
    ("with fit outcomes", {"max_request_cost": 2.0}, np.ones((300, 3)), "above max_request_cost=2.0"),
    ("none", {"method": "bonferroni"}, COSTS, "needs grid"),
    ("scores only", {}, COSTS, "orders the grid by fit-part outcomes"),
    ("with fit outcomes", {"method": "holm"}, COSTS, "method='holm' is out of range"),
])
def test_bad_settings_are_refused_naming_the_problem(small_grids, grid, change, costs, message):
    tuner = ChainTuner(alpha=0.1, max_cost_per_1k=9000.0, grid=small_grids[grid], **change)
    with pytest.raises(ValueError, match=message):
        tuner.fit(*population(300, seed=45), costs)


# Validity against the exact finite-sample null

def test_the_hoeffding_bentkus_p_value_is_valid_at_the_boundary_of_the_null_and_has_power():
    """Losses on {0, 1/2, 1} with mean exactly the level: P(p ≤ u) ≤ u, summed over every outcome."""
    n, level = 40, 0.3
    outcomes = np.array([(a, b, n - a - b) for a, b in product(range(n + 1), repeat=2) if a + b <= n])
    p_values = hoeffding_bentkus_p_value(outcomes @ [0.0, 0.5, 1.0] / n, n, level)
    for weights in ([0.7, 0.0, 0.3], [0.6, 0.2, 0.2], [0.4, 0.6, 0.0], [0.55, 0.3, 0.15]):
        assert np.dot(weights, [0.0, 0.5, 1.0]) == pytest.approx(level)
        probability = multinomial.pmf(outcomes, n, weights)
        for u in (0.01, 0.05, 0.1, 0.3):
            assert probability[p_values <= u].sum() <= u
    below = binom.pmf(np.arange(n + 1), n, 0.05)   # a mean far below the level is detected
    assert below[hoeffding_bentkus_p_value(np.arange(n + 1) / n, n, level) <= 0.1].sum() > 0.8


def violates(truth, index, error_metric, alpha, max_abstention, max_cost_per_1k):
    """Whether the grid rule at ``index`` (-1: none certified) truly breaks a target."""
    bad = ((truth[error_metric] > alpha) | (truth["abstention_rate"] > max_abstention)
           | (truth["cost_per_1k"] > max_cost_per_1k))
    return np.where(index >= 0, bad[np.maximum(index, 0)], False)


@pytest.fixture(scope="module")
def table():
    """A finite population (certify sets are drawn from it with replacement), a grid placed on a fit draw,
    and every grid rule's true metrics: the table's own."""
    scores, correct = population(4000, seed=50)
    fit = np.random.default_rng(51).integers(0, 4000, 1000)
    grid = ChainGrid.from_fit(scores[fit], 5, 0.2, fit_correct=correct[fit], costs=COSTS)
    return scores, correct, grid, chain_metrics(scores, correct, COSTS, grid.thresholds)


@pytest.mark.parametrize("method, error, n, sets", [
    ("fixed-sequence", "conditional", 600, 1000),
    ("fixed-sequence", "joint", 600, 1000),
    ("bonferroni", "conditional", 2000, 500),
])
def test_the_chosen_rule_meets_every_target_with_probability_one_minus_delta(table, method, error, n, sets):
    """The rule certified on a draw breaks a target (true error, abstention or cost above it) in at most δ
    of the draws, up to a binomial margin; picking the cheapest rule whose certify-part metrics meet the
    targets breaks one far more often, so the check can tell a valid procedure from an invalid one."""
    table_scores, table_correct, grid, truth = table
    alpha, gamma, cost, delta = 0.06, 0.1, 15000.0, 0.1
    key = {"conditional": "answered_error", "joint": "wrong_answer_rate"}[error]
    draws = np.random.default_rng(52).integers(0, 4000, (sets, n))
    scores, correct = table_scores[draws], table_correct[draws]
    tuner = ChainTuner(alpha=alpha, max_abstention=gamma, max_cost_per_1k=cost, delta=delta, grid=grid,
                       method=method, error=error)
    rules = tuner.fit_rules(scores, correct, COSTS)
    certified = ~np.isnan(rules[:, 0])
    index = np.array([np.flatnonzero((grid.thresholds == rule).all(axis=1))[0] if ok else -1
                      for rule, ok in zip(rules, certified)])
    margin = 3 * math.sqrt(delta * (1 - delta) / sets)
    assert violates(truth, index, key, alpha, gamma, cost).mean() <= delta + margin
    assert certified.mean() > 0.3   # not valid by never certifying
    counts = grid.counts(scores, correct, COSTS)
    observed = {"answered_error": counts.wrong / np.maximum(counts.answered, 1), "wrong_answer_rate": counts.wrong / n}
    meets = (observed[key] <= alpha) & ((n - counts.answered) / n <= gamma) & (1000 * counts.cost / n <= cost)
    naive = np.where(meets.any(axis=1), np.where(meets, counts.cost, np.inf).argmin(axis=1), -1)
    assert violates(truth, naive, key, alpha, gamma, cost).mean() > delta + margin


def test_rules_certified_on_one_draw_keep_their_targets_on_a_fresh_large_sample(table):
    table_scores, table_correct, grid, _ = table
    tuner = ChainTuner(alpha=0.06, max_abstention=0.1, max_cost_per_1k=15000.0, grid=grid)
    rng = np.random.default_rng(61)
    fresh = rng.integers(0, 4000, 50_000)
    within = []
    for _ in range(30):
        draw = rng.integers(0, 4000, 1500)
        try:
            rule = tuner.fit(table_scores[draw], table_correct[draw], COSTS).rule_
        except InfeasibleTarget:
            continue
        metrics = chain_metrics(table_scores[fresh], table_correct[fresh], COSTS, rule)
        within.append(metrics["answered_error"] <= 0.06 and metrics["abstention_rate"] <= 0.1
                      and metrics["cost_per_1k"] <= 15000.0)
    assert len(within) >= 15 and np.mean(within) >= 0.8
