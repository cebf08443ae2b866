"""The monitors benchmark's helpers: the δ split, drifted traffic, delays and population risks (no real data)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.benchmarks.bench_monitor import drift_block, null_block, watch
from experiments.benchmarks.monitor_streams import (
    ALPHA, MONITORS, PREFIX, Pool, Scenario, delay, delay_summary, drift_weights, first_alarm, group_shares,
    mean_p_value, population_risk, rate_interval, request_of_label, split_delta,
)
from policies import AcceptedErrorTuner, JointTuner, threshold_grid


def test_split_delta_keeps_the_union_of_false_alarms_within_delta() -> None:
    each = split_delta(0.05, 3)
    assert each == pytest.approx(0.05 / 3)
    assert 3 * each <= 0.05 + 1e-15


@pytest.mark.parametrize("delta, monitors", [(0.0, 3), (1.0, 3), (0.05, 0)])
def test_split_delta_refuses_levels_outside_the_unit_interval_and_no_monitors(delta: float, monitors: int) -> None:
    with pytest.raises(ValueError):
        split_delta(delta, monitors)


def test_drift_weights_give_the_enriched_group_its_share_and_keep_the_others_ratios() -> None:
    groups = np.array(["easy"] * 6 + ["spam"] * 3 + ["hard"] * 1)
    weights = drift_weights(groups, np.ones(10, dtype=bool), "hard", 0.3)
    shares = group_shares(groups, weights)
    assert weights.sum() == pytest.approx(1.0)
    assert shares["hard"] == pytest.approx(0.3)
    assert shares["easy"] / shares["spam"] == pytest.approx(2.0)   # 6 : 3 as before
    assert np.ptp(weights[groups == "easy"]) == 0                    # mails of a group stay equally likely


def test_drift_weights_never_draw_unavailable_mails() -> None:
    groups = np.array(["a", "a", "b", "b"])
    available = np.array([True, False, True, True])
    weights = drift_weights(groups, available)
    assert weights[1] == 0 and weights.sum() == pytest.approx(1.0)
    assert weights[available].tolist() == pytest.approx([1 / 3] * 3)


def test_drift_weights_refuse_a_group_with_no_available_mail() -> None:
    with pytest.raises(ValueError, match="share"):
        drift_weights(np.array(["a", "b"]), np.array([True, False]), "b", 0.3)


def test_draws_from_drift_weights_follow_the_shares() -> None:
    groups = np.array(["easy"] * 90 + ["hard"] * 10)
    weights = drift_weights(groups, np.ones(100, dtype=bool), "hard", 0.3)
    drawn = np.random.default_rng(0).choice(100, 20000, p=weights)
    assert np.mean(groups[drawn] == "hard") == pytest.approx(0.3, abs=0.015)


def test_request_of_label_maps_the_alarming_label_to_its_request() -> None:
    fed = np.array([0, 3, 4, 10])            # requests whose labels were fed, 0-based
    assert request_of_label(fed, 4) == 11    # the 4th label came with request 11 (1-based)
    assert request_of_label(fed, None) is None


def test_delay_counts_drifted_requests_up_to_the_alarm_and_ignores_earlier_alarms() -> None:
    assert delay(201, 200) == 1     # the first drifted request raised it
    assert delay(200, 200) is None  # raised before the switch: a false alarm, not a detection
    assert delay(None, 200) is None


def test_first_alarm_is_the_earliest_of_any_monitor() -> None:
    assert first_alarm({"risk": 900, "rate": None, "exchangeability": 250}) == 250
    assert first_alarm({"risk": None, "rate": None}) is None


def test_detection_looks_past_a_monitor_that_alarmed_before_the_switch() -> None:
    alarms = {"risk": None, "rate": 120, "exchangeability": 260}
    assert first_alarm(alarms, after=200) == 260
    assert delay(first_alarm(alarms, after=200), 200) == 60


def test_delay_summary_reports_detection_rate_and_quartiles_of_the_detected() -> None:
    summary = delay_summary([10, 20, 30, 40, None])
    assert summary["detection_rate"] == pytest.approx(0.8)
    assert (summary["delay_q25"], summary["median_delay"], summary["delay_q75"]) == (17.5, 25.0, 32.5)
    assert delay_summary([None, None])["median_delay"] is None


def test_population_risk_weights_each_mail_by_its_draw_probability() -> None:
    defer = np.array([False, False, True, False])
    correct = np.array([True, False, False, True])
    weights = np.array([0.4, 0.1, 0.3, 0.2])
    rate, error = population_risk(defer, correct, weights)
    assert rate == pytest.approx(0.3)
    assert error == pytest.approx(0.1 / 0.7)
    assert population_risk(np.ones(4, dtype=bool), correct, weights) == (pytest.approx(1.0), 0.0)


def test_mean_p_value_is_a_half_without_shift_and_lower_for_higher_scores() -> None:
    rng = np.random.default_rng(0)
    reference, served = rng.random(4000), rng.random(4000)
    uniform = np.full(4000, 1 / 4000)
    assert mean_p_value(reference, served, uniform) == pytest.approx(0.5, abs=0.02)
    assert mean_p_value(reference, served + 0.3, uniform) < 0.3


def test_rate_interval_covers_the_rate() -> None:
    row = rate_interval(3, 300)
    assert row["rate"] == pytest.approx(0.01)
    assert row["ci95"][0] < 0.01 < row["ci95"][1]
    assert rate_interval(0, 0)["rate"] is None


def synthetic_pool(n: int = 3000, seed: int = 0) -> Pool:
    """Group "a": low scores, 0.5 % wrong; group "b" (a tenth): high scores, 40 % wrong."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < 0.1
    scores = np.where(hard, rng.beta(5, 2, n), rng.beta(1, 8, n))
    correct = rng.random(n) > np.where(hard, 0.4, 0.005)
    return Pool(scores, correct, rng.random(n), np.where(hard, "b", "a"))


def test_watch_reports_the_risk_alarm_at_the_request_whose_label_raised_it() -> None:
    pool = synthetic_pool()
    wrong_mails = np.flatnonzero(~pool.correct)
    requests = np.resize(wrong_mails, 200)           # every answer wrong
    labelled = np.arange(200) % 2 == 1               # every other label comes back
    served = watch(pool, requests, (np.inf, 1.0), pool.scores, labelled, beta=None, delta=0.05, seed=0)
    assert "rate" not in served["alarms"]            # no certified rate: no rate monitor
    assert served["alarms"]["risk"] == 2 * served["risk_labels"]


def test_null_streams_count_false_alarms_of_each_monitor() -> None:
    pool = synthetic_pool()
    grid = threshold_grid(synthetic_pool(seed=1).scores, 20, 0.3)
    tuner = JointTuner(alpha=0.05, max_rate=0.3, delta=0.05, grid=grid)
    block = null_block(pool, tuner, 0.3, 1000, streams=4, label_rate=0.5, delta=split_delta(0.05, 3), seed=0)
    assert block["certified"] == 4
    assert set(block["false_alarms"]) == set(MONITORS)
    assert block["stream_length"] == 2000
    assert block["any_false_alarm"]["of"] == block["certified"]


def test_a_drift_that_breaks_the_error_guarantee_is_detected_and_recertification_restores_it() -> None:
    pool = synthetic_pool()
    fit_scores = synthetic_pool(seed=1).scores
    tuners = {"joint": JointTuner(alpha=ALPHA, max_rate=0.3, delta=0.05, grid=threshold_grid(fit_scores, 20, 0.3)),
              "accepted-error": AcceptedErrorTuner(alpha=ALPHA, delta=0.05, grid=threshold_grid(fit_scores))}
    scenario = Scenario("hard-arrives", "30 % of the traffic from group b", None, None, "b", 0.3)
    detection, recert = drift_block(pool, tuners, 0.3, scenario, 1000, streams=3, label_rate=0.5,
                                    delta=split_delta(0.05, 3), recertify=[600], seed=0, block=2)
    assert detection["certified"] == 3
    assert detection["after_drift"]["guarantee_broken"] == 1.0
    assert detection["detection_rate"] == 1.0 and detection["median_delay"] >= 1
    assert detection["drifted_group_shares"]["b"] == pytest.approx(0.3)
    assert detection["alarms_before_switch"] <= 3 and detection["prefix"] == PREFIX
    fixed = recert["by_labels"]["600"]["accepted-error"]
    assert fixed["certified"] == 3 and fixed["holds"] == 1.0
    assert recert["old_rule"]["holds"] == 0.0
