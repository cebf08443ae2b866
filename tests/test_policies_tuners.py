"""Budget tuners: thresholds, certificates, infeasible targets, and agreement with MAPIE's risk control."""

import math
import warnings

import numpy as np
import pytest
from mapie.risk_control import BinaryClassificationController, BinaryRisk
from mapie.risk_control.methods import find_best_predict_param, get_r_hat_plus

from cascade.config import AcceptedErrorBudget, CostBudget, JointBudget, RateBudget
from cascade.types import CostModel
from policies import (
    AcceptedErrorTuner, ConfidencePolicy, CostTuner, InfeasibleTarget, JointTuner, RateTuner, clopper_pearson_upper,
    make_tuner, simulate, threshold_grid,
)
from policies.ties import canonical


MAX_COST = 6.0   # above every simulated expert cost in the fixture (the tuner refuses data above its bound)


@pytest.fixture(scope="module")
def calibration():
    """Scores already on the canonical grid the tuners compare on, so MAPIE sees the same values."""
    data = simulate(600, seed=5)
    return canonical(ConfidencePolicy(n_classes=2).score(data.features)), data.small_correct, data.expert_cost


@pytest.fixture(scope="module")
def grid():
    """Learn-then-Test's candidate thresholds, placed on a separate (fit) sample."""
    return threshold_grid(ConfidencePolicy(n_classes=2).score(simulate(600, seed=6).features))


@pytest.fixture(scope="module")
def joint_grid():
    return threshold_grid(ConfidencePolicy(n_classes=2).score(simulate(600, seed=6).features), max_rate=0.5)


def test_crc_rate_keeps_at_most_floor_n_plus_one_beta_minus_one_samples_above_the_threshold(calibration):
    scores = calibration[0]
    threshold = RateTuner(target=0.2).fit(scores).threshold_
    assert np.sum(scores > threshold) <= math.floor(601 * 0.2) - 1


def test_crc_rate_threshold_is_the_smallest_that_meets_the_bound(calibration):
    scores = calibration[0]
    threshold = RateTuner(target=0.2).fit(scores).threshold_
    next_lower = scores[scores < threshold].max()
    assert np.sum(scores > next_lower) > math.floor(601 * 0.2) - 1


def test_samples_tied_with_the_threshold_are_not_deferred():
    scores = np.array([0.1] * 10 + [0.5] * 5 + [0.9] * 5)
    tuner = RateTuner(target=0.5).fit(scores)
    assert tuner.threshold_ == 0.5 and tuner.certificate_.achieved["defer_rate"] == 0.25


@pytest.mark.parametrize("delta, needed, smallest", [(None, 999, 1 / 101), (0.1, 2302, 1 - 0.1 ** (1 / 100))])
def test_a_certify_part_too_small_for_the_rate_is_refused_with_the_n_it_needs(delta, needed, smallest):
    with pytest.raises(InfeasibleTarget, match=f"needs n ≥ {needed}; with n=100 the smallest certifiable rate") as e:
        RateTuner(target=0.001, delta=delta).fit(np.linspace(0, 1, 100))
    assert e.value.best["defer_rate"] == pytest.approx(smallest)
    assert RateTuner(target=smallest + 1e-9, delta=delta).fit(np.linspace(0, 1, 100)).certificate_.holds


@pytest.mark.parametrize("name, values, problem", [
    ("small_correct", np.ones(99, dtype=bool), "small_correct has 99 entries per set"),
    ("expert_cost", np.ones(101), "expert_cost has 101 entries per set"),
    ("tie_keys", np.full(100, 0.5)[:98], "tie_keys has 98 entries per set"),
    ("expert_cost", np.append(np.ones(99), np.nan), "expert_cost contain NaN"),
    ("tie_keys", np.full(100, 1.5), r"tie_keys must lie in \[0, 1\)"),
])
def test_bad_outcomes_are_refused_naming_the_problem(name, values, problem):
    with pytest.raises(ValueError, match=problem):
        RateTuner(target=0.2).fit(np.linspace(0, 1, 100), **{name: values})


def test_rate_certificate_in_expectation(calibration):
    certificate = RateTuner(target=0.2).fit(calibration[0]).certificate_
    assert certificate.kind == "rate" and certificate.guarantee == "in expectation" and certificate.delta is None
    assert certificate.n == 600 and certificate.bound["defer_rate"] <= 0.2 and certificate.holds


def test_high_probability_rate_bound_is_the_clopper_pearson_bound(calibration):
    scores = calibration[0]
    certificate = RateTuner(target=0.2, delta=0.05).fit(scores).certificate_
    deferred = int(np.sum(scores > certificate.threshold))
    assert certificate.bound["defer_rate"] == pytest.approx(float(clopper_pearson_upper(deferred, 600, 0.05)))
    assert certificate.bound["defer_rate"] <= 0.2 < float(clopper_pearson_upper(deferred + 1, 600, 0.05))
    assert certificate.guarantee == "with probability ≥ 1-δ" and certificate.delta == 0.05


def test_certificate_reports_every_metric_achieved_on_calibration(calibration):
    scores, correct, cost = calibration
    certificate = RateTuner(target=0.2).fit(scores, correct, cost).certificate_
    defer = scores > certificate.threshold
    assert certificate.achieved["defer_rate"] == pytest.approx(defer.mean())
    assert certificate.achieved["accepted_error"] == pytest.approx(1 - correct[~defer].mean())
    assert certificate.achieved["cost_per_1k"] == pytest.approx(1000 * (cost * defer).mean())


def test_cost_tuner_with_unit_costs_matches_the_rate_tuner(calibration):
    scores = calibration[0]
    cost = CostTuner(target_per_1k=200.0, max_expert_cost=1.0).fit(scores, expert_cost=np.ones(600))
    assert cost.threshold_ == RateTuner(target=0.2).fit(scores).threshold_


def test_cost_tuner_certifies_the_crc_bound_including_the_small_tier(calibration):
    scores, _, cost = calibration
    tuner = CostTuner(target_per_1k=300.0, small_cost=0.05, max_expert_cost=MAX_COST)
    certificate = tuner.fit(scores, expert_cost=cost).certificate_
    spent = cost[scores > certificate.threshold].sum()
    assert certificate.bound["cost_per_1k"] == pytest.approx(1000 * (0.05 + (spent + MAX_COST) / 601))
    assert certificate.bound["cost_per_1k"] <= 300.0
    assert f"costs at most {MAX_COST:g}" in certificate.statement


def test_the_cost_bound_comes_from_the_config_not_the_data():
    budget = CostBudget(target=400.0)
    prices = CostModel(expert_per_call=0.1, expert_per_1k_prompt_tokens=1.0, expert_per_1k_completion_tokens=3.0)
    assert make_tuner(budget, prices, max_model_len=2048).max_expert_cost == pytest.approx(0.1 + 3.0 * 2.048)
    explicit = CostBudget(target=400.0, max_cost_per_call=0.5)
    assert make_tuner(explicit, prices, max_model_len=2048).max_expert_cost == 0.5
    with pytest.raises(ValueError, match="budget.max_cost_per_call"):
        make_tuner(budget, prices)
    with pytest.raises(ValueError, match="needs max_expert_cost"):
        CostTuner(target_per_1k=400.0).fit([0.1, 0.2], expert_cost=[1.0, 1.0])


def test_cost_target_below_the_small_tier_cost_is_infeasible(calibration):
    scores, _, cost = calibration
    with pytest.raises(InfeasibleTarget, match="best achievable is 100 per 1k") as error:
        CostTuner(target_per_1k=50.0, small_cost=0.1, max_expert_cost=MAX_COST).fit(scores, expert_cost=cost)
    assert error.value.best == {"cost_per_1k": pytest.approx(100.0)}


def test_cost_tuner_rejects_a_cost_above_the_declared_maximum(calibration):
    scores, _, cost = calibration
    with pytest.raises(ValueError, match="exceeds max_expert_cost"):
        CostTuner(target_per_1k=300.0, max_expert_cost=0.1).fit(scores, expert_cost=cost)


def test_accepted_error_certificate_bounds_the_error_of_accepted_answers(calibration, grid):
    scores, correct, _ = calibration
    certificate = AcceptedErrorTuner(alpha=0.1, delta=0.1, grid=grid).fit(scores, correct).certificate_
    accepted = scores <= certificate.threshold
    assert certificate.achieved["accepted_error"] == pytest.approx(1 - correct[accepted].mean())
    assert certificate.achieved["accepted_error"] <= certificate.bound["accepted_error"] <= 0.1


def test_infeasible_accepted_error_names_the_best_certifiable_value_which_is_then_feasible(calibration, grid):
    scores, correct, _ = calibration
    with pytest.raises(InfeasibleTarget, match="lowest certifiable accepted error among the tested") as error:
        AcceptedErrorTuner(alpha=0.005, delta=0.1, grid=grid).fit(scores, correct)
    best = error.value.best["accepted_error"]
    assert AcceptedErrorTuner(alpha=best + 1e-9, delta=0.1, grid=grid).fit(scores, correct).certificate_.holds


@pytest.mark.parametrize("procedure", ["fixed-sequence", "bonferroni"])
def test_joint_certificate_bounds_both_error_and_rate(procedure, calibration, joint_grid):
    scores, correct, _ = calibration
    tuner = JointTuner(alpha=0.1, max_rate=0.5, delta=0.1, procedure=procedure, grid=joint_grid)
    certificate = tuner.fit(scores, correct).certificate_
    assert certificate.bound["accepted_error"] <= 0.1 and certificate.bound["defer_rate"] <= 0.5
    assert certificate.achieved["defer_rate"] <= 0.5


@pytest.mark.parametrize("procedure", ["fixed-sequence", "bonferroni"])
def test_infeasible_joint_target_says_what_the_deferral_budget_can_certify(procedure, calibration, grid):
    scores, correct, _ = calibration
    with pytest.raises(InfeasibleTarget, match="within that deferral budget the lowest certifiable accepted error") as e:
        JointTuner(alpha=0.02, max_rate=0.4, delta=0.1, procedure=procedure, grid=grid).fit(scores, correct)
    assert all(np.isfinite(value) for value in e.value.best.values()) and "inf" not in str(e.value)


def test_a_joint_rate_no_tested_threshold_can_certify_says_so_without_inf(calibration, grid):
    scores, correct, _ = calibration
    deferring_most = grid.threshold[:5]   # a user's grid without "defer nothing"
    with pytest.raises(InfeasibleTarget, match="no tested threshold keeps the deferral rate") as error:
        JointTuner(alpha=0.1, max_rate=0.1, delta=0.1, grid=deferring_most).fit(scores, correct)
    assert "inf" not in str(error.value) and 0 < error.value.best["certifiable_defer_rate"] <= 1


def test_fit_thresholds_runs_the_same_procedure_on_each_row(calibration, grid, joint_grid):
    scores, correct, _ = calibration
    rows = np.vstack([scores, scores[::-1], np.roll(scores, 7)])
    correct_rows = np.vstack([correct, correct[::-1], np.roll(correct, 7)])
    for tuner in (RateTuner(0.2), RateTuner(0.2, delta=0.1), AcceptedErrorTuner(0.1, grid=grid),
                  JointTuner(0.1, 0.5, grid=joint_grid)):
        batched = tuner.fit_thresholds(rows, correct_rows)
        assert batched.tolist() == [tuner.fit(r, c).threshold_ for r, c in zip(rows, correct_rows)]


def test_fit_thresholds_marks_infeasible_rows_with_nan(calibration, grid):
    scores, correct, _ = calibration
    assert np.isnan(AcceptedErrorTuner(alpha=0.001, grid=grid).fit_thresholds(scores, correct)).all()


def test_tuner_names_the_missing_outcome(grid):
    with pytest.raises(ValueError, match="AcceptedErrorTuner needs small_correct"):
        AcceptedErrorTuner(grid=grid).fit(np.random.default_rng(0).random(50))


@pytest.mark.parametrize("tuner", [AcceptedErrorTuner(), JointTuner()])
def test_learn_then_test_needs_a_grid_fixed_before_certification(tuner, calibration):
    scores, correct, _ = calibration
    with pytest.raises(ValueError, match="needs grid: candidate thresholds fixed before the certify part"):
        tuner.fit(scores, correct)


def test_tuner_rejects_nan_scores():
    with pytest.raises(ValueError, match=r"scores contain NaN \(1 of 2\)"):
        RateTuner().fit([0.1, float("nan")])


@pytest.mark.parametrize("target", [0.0, 1.5])
def test_rate_target_must_be_a_rate(target):
    with pytest.raises(ValueError, match="target must be in"):
        RateTuner(target=target).fit([0.1, 0.2])


def test_make_tuner_builds_each_budget_kind_from_config():
    cost = CostModel(small_per_call=0.01)
    rate = make_tuner(RateBudget(target=0.15, delta=0.05))
    assert rate.get_params() == {"target": 0.15, "delta": 0.05}
    assert make_tuner(CostBudget(target=400.0), cost, max_model_len=2048).small_cost == 0.01
    assert isinstance(make_tuner(AcceptedErrorBudget(target=0.02, delta=0.05)), AcceptedErrorTuner)
    joint = make_tuner(JointBudget(target=0.02, max_rate=0.3, delta=0.05))
    assert (joint.alpha, joint.max_rate, joint.delta) == (0.02, 0.3, 0.05)


def test_make_tuner_asks_for_delta_where_the_guarantee_needs_it():
    with pytest.raises(ValueError, match="budget.delta"):
        make_tuner(AcceptedErrorBudget(target=0.02))


# Cross-checks against MAPIE 1.6 (mapie.risk_control): the same data, the same procedure, the same answer.

def _accept_probability(scores):
    """MAPIE thresholds 'probabilities' with >=; accepting means score <= threshold, i.e. -score >= -threshold."""
    accept = -np.asarray(scores, dtype=float).ravel()
    return np.column_stack([1 - accept, accept])


DEFER_RATE = BinaryRisk(
    risk_occurrence=lambda y_true, accepted: accepted == 0,
    risk_condition=lambda y_true, accepted: np.ones_like(accepted, dtype=bool),
    higher_is_better=False,
)
ACCEPTED_ERROR = BinaryRisk(
    risk_occurrence=lambda y_true, accepted: y_true == 0,
    risk_condition=lambda y_true, accepted: accepted == 1,
    higher_is_better=False,
)


def _mapie_controller(risk, target, delta, thresholds, fwer_method, scores, correct):
    controller = BinaryClassificationController(
        _accept_probability, risk, target, confidence_level=1 - delta, list_predict_params=-thresholds,
        fwer_method=fwer_method, best_predict_param_choice=DEFER_RATE,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return controller.calibrate(scores, correct.astype(int))


def test_crc_rate_threshold_matches_mapie_conformal_risk_control(calibration):
    scores = calibration[0]
    lambdas = np.unique(scores)
    losses = (scores[:, None] > lambdas[None, :]).astype(float)
    _, bound = get_r_hat_plus(losses, lambdas, method="crc", bound=None, delta=None, sigma_init=None)
    assert RateTuner(target=0.2).fit(scores).threshold_ == find_best_predict_param(lambdas, bound, np.array([0.2]))[0]


def test_high_probability_rate_matches_mapie_fixed_sequence_learn_then_test(calibration):
    scores, correct, _ = calibration
    controller = _mapie_controller(DEFER_RATE, 0.2, 0.1, np.unique(scores), "fixed_sequence", scores, correct)
    assert RateTuner(target=0.2, delta=0.1).fit(scores).threshold_ == -controller.valid_predict_params.max()


def _grid_thresholds(scores, n_grid=20):
    ascending = np.sort(scores)
    thresholds = ascending[np.ceil(np.arange(1, n_grid + 1) * len(scores) / n_grid).astype(int) - 1]
    thresholds[-1] = np.inf
    return thresholds


def test_accepted_error_matches_mapie_bonferroni_learn_then_test(calibration):
    scores, correct, _ = calibration
    thresholds = _grid_thresholds(scores)
    controller = _mapie_controller(ACCEPTED_ERROR, 0.1, 0.1, thresholds, "bonferroni", scores, correct)
    tuner = AcceptedErrorTuner(alpha=0.1, delta=0.1, grid=thresholds).fit(scores, correct)
    assert tuner.threshold_ == -controller.best_predict_param


def test_joint_bonferroni_matches_mapie_multi_risk_learn_then_test(calibration):
    scores, correct, _ = calibration
    controller = _mapie_controller(
        [ACCEPTED_ERROR, DEFER_RATE], [0.1, 0.5], 0.1, _grid_thresholds(scores), "bonferroni", scores, correct
    )
    tuner = JointTuner(alpha=0.1, max_rate=0.5, delta=0.1, procedure="bonferroni", grid=_grid_thresholds(scores))
    tuner.fit(scores, correct)
    assert tuner.threshold_ == -controller.best_predict_param
