"""Production monitors: anytime-valid false alarms at most δ, alarms under a real violation or shift."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from cascade.persistence import NotFittedError
from policies.monitors import BoundedMeanMonitor, ExchangeabilityMonitor, RateMonitor

STREAMS, LENGTH, DELTA = 300, 500, 0.05
# a false-alarm count above this has probability below 0.001 when the true rate is δ
MOST_FALSE_ALARMS = int(binom.ppf(0.999, STREAMS, DELTA))


def alarm_times(monitors):
    """Observation count at each monitor's first alarm (inf where it never alarmed)."""
    return np.array([math.inf if m.alarm_at_ is None else m.alarm_at_ for m in monitors])


@pytest.mark.parametrize(
    "observations",
    [
        pytest.param(lambda rng, size: (rng.random(size) < 0.1).astype(float), id="bernoulli-at-alpha"),
        pytest.param(lambda rng, size: (rng.random(size) < 0.09).astype(float), id="bernoulli-below-alpha"),
        pytest.param(lambda rng, size: rng.beta(1.0, 9.0, size), id="continuous-mean-alpha"),
    ],
)
def test_bounded_mean_false_alarms_stay_below_delta_when_the_certificate_holds(observations):
    rng = np.random.default_rng(0)
    streams = observations(rng, (STREAMS, LENGTH))
    alarms = sum(BoundedMeanMonitor(alpha=0.1, delta=DELTA).update(stream).alarm_ for stream in streams)
    assert alarms <= MOST_FALSE_ALARMS, f"false-alarm rate {alarms / STREAMS:.3f} with δ={DELTA}"


def test_bounded_mean_alarms_when_the_risk_doubles_and_records_when():
    rng = np.random.default_rng(1)
    streams = (rng.random((STREAMS, LENGTH)) < 0.2).astype(float)
    times = alarm_times([BoundedMeanMonitor(alpha=0.1, delta=DELTA).update(stream) for stream in streams])
    detected = np.isfinite(times)
    assert detected.mean() >= 0.95, f"detected in {detected.mean():.3f} of the streams"
    assert 1 <= times[detected].min() and times[detected].max() <= LENGTH
    assert np.median(times) <= 150, f"median delay {np.median(times)} observations"


def test_the_alarm_is_raised_at_the_observation_that_reaches_one_over_delta():
    monitor = BoundedMeanMonitor(alpha=0.05, delta=0.1)
    evidence = []
    for wrong in np.random.default_rng(2).random(400) < 0.2:
        evidence.append(monitor.update([wrong]).evidence_)
    first = int(np.argmax(np.array(evidence) >= 1 / 0.1)) + 1
    assert monitor.alarm_ and monitor.alarm_at_ == first and evidence[first - 2] < 10


def test_the_alarm_is_sticky_when_the_evidence_falls_back():
    monitor = BoundedMeanMonitor(alpha=0.3, delta=DELTA).update(np.ones(6))
    alarmed_at = monitor.alarm_at_
    monitor.update(np.zeros(100))
    assert monitor.evidence_ < 1 / DELTA
    assert monitor.alarm_ and monitor.alarm_at_ == alarmed_at == 5 and monitor.n_ == 106


def test_evidence_stays_positive_however_many_bets_are_lost():
    monitor = BoundedMeanMonitor(alpha=0.02, delta=DELTA).update(np.ones(20)).update(np.zeros(5000))
    assert monitor.evidence_ > 0 and math.isfinite(monitor.log_evidence_)
    assert monitor.mean_ == pytest.approx(20 / 5020)


def test_a_batch_gives_the_same_evidence_as_its_observations_one_at_a_time():
    rng = np.random.default_rng(3)
    observations = (rng.random(300) < 0.15).astype(float)
    batched = BoundedMeanMonitor(alpha=0.1)
    for part in np.array_split(observations, [7, 8, 100, 210]):
        batched.update(part)
    single = BoundedMeanMonitor(alpha=0.1)
    for x in observations:
        single.update([x])
    assert batched.log_evidence_ == pytest.approx(single.log_evidence_, rel=1e-12)
    assert (batched.alarm_at_, batched.n_, batched.mean_) == (single.alarm_at_, single.n_, single.mean_)


def test_rate_monitor_scales_costs_and_names_its_bound():
    rng = np.random.default_rng(4)
    costs = rng.choice([0.0, 2.0], size=LENGTH, p=[0.7, 0.3])  # mean 0.6 per request, above 0.4
    monitor = RateMonitor(beta=0.4, delta=DELTA, scale=2.0).update(costs)
    unit = BoundedMeanMonitor(alpha=0.2, delta=DELTA).update(costs / 2.0)
    assert monitor.alarm_ and monitor.beta == 0.4 and monitor.mean_ == pytest.approx(costs.mean())
    assert monitor.log_evidence_ == pytest.approx(unit.log_evidence_) and monitor.alarm_at_ == unit.alarm_at_


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: BoundedMeanMonitor(alpha=0.0), "alpha must lie in"),
        (lambda: BoundedMeanMonitor(alpha=1.2), "alpha must lie in"),
        (lambda: BoundedMeanMonitor(alpha=0.1, delta=1.0), "delta must lie in"),
        (lambda: BoundedMeanMonitor(alpha=0.1, scale=0.0), "scale must be positive"),
        (lambda: RateMonitor(beta=3.0, scale=2.0), r"beta must lie in \(0, 2\)"),
        (lambda: BoundedMeanMonitor(alpha=0.1).update([0.0, 1.5]), r"observations must lie in \[0, 1\]"),
        (lambda: RateMonitor(beta=0.1).update([-0.1]), r"observations must lie in \[0, 1\]"),
        (lambda: BoundedMeanMonitor(alpha=0.1).update([0.0, np.nan]), "observations contain NaN at positions \\[1\\]"),
        (lambda: ExchangeabilityMonitor(delta=0.0), "delta must lie in"),
        (lambda: ExchangeabilityMonitor(jump=0.0), "jump must lie in"),
        (lambda: ExchangeabilityMonitor().fit([]), "reference scores are empty"),
        (lambda: ExchangeabilityMonitor().fit([0.1, np.nan]), "reference scores contain NaN"),
        (lambda: ExchangeabilityMonitor().fit([0.1]).update([np.nan]), "scores contain NaN"),
    ],
)
def test_invalid_settings_and_observations_are_refused_by_name(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_exchangeability_monitor_must_be_fitted_first():
    with pytest.raises(NotFittedError, match="ExchangeabilityMonitor is not fitted"):
        ExchangeabilityMonitor().update([0.3])


@pytest.mark.parametrize(
    "scores",
    [
        pytest.param(lambda rng, size: rng.normal(size=size), id="continuous"),
        pytest.param(lambda rng, size: rng.integers(0, 3, size).astype(float), id="ties"),
    ],
)
def test_exchangeable_streams_rarely_alarm(scores):
    rng = np.random.default_rng(5)
    alarms = sum(
        ExchangeabilityMonitor(delta=DELTA, seed=seed).fit(scores(rng, 200)).update(scores(rng, LENGTH)).alarm_
        for seed in range(STREAMS)
    )
    assert alarms <= MOST_FALSE_ALARMS, f"false-alarm rate {alarms / STREAMS:.3f} with δ={DELTA}"


@pytest.mark.parametrize(("shift", "null_prefix", "most_delay"), [(0.5, 0, 150), (-0.5, 0, 150), (0.5, 2000, 250)])
def test_a_shift_of_half_a_standard_deviation_is_detected(shift, null_prefix, most_delay):
    rng = np.random.default_rng(6)
    streams, delays = 40, []
    for seed in range(streams):
        monitor = ExchangeabilityMonitor(delta=DELTA, seed=seed).fit(rng.normal(size=500))
        if not monitor.update(rng.normal(size=null_prefix)).alarm_:  # an early alarm is a false one
            monitor.update(rng.normal(shift, size=LENGTH))
            delays.append(math.inf if monitor.alarm_at_ is None else monitor.alarm_at_ - null_prefix)
    delays = np.array(delays)
    assert streams - len(delays) <= binom.ppf(0.999, streams, DELTA), f"{streams - len(delays)} false alarms"
    assert np.isfinite(delays).mean() >= 0.9 and np.median(delays) <= most_delay, (
        f"detected in {np.isfinite(delays).mean():.2f} of the streams, median delay {np.median(delays)}")


def simple_jumper(p_values, jump):
    """The Simple Jumper as written in Vovk et al. (2021), Algorithm 1; the log capital after each p-value."""
    capital = {-1: 1 / 3, 0: 1 / 3, 1: 1 / 3}
    total, path = 1.0, []
    for p in p_values:
        capital = {eps: (1 - jump) * c + jump / 3 * total for eps, c in capital.items()}
        capital = {eps: c * (1 + eps * (p - 0.5)) for eps, c in capital.items()}
        total = sum(capital.values())
        path.append(math.log(total))
    return np.array(path)


def test_evidence_is_the_simple_jumper_on_online_conformal_p_values():
    rng = np.random.default_rng(7)
    reference = rng.integers(0, 20, 50).astype(float)
    stream = np.concatenate([rng.integers(0, 20, 200), rng.integers(8, 28, 400)]).astype(float)
    smoothing = np.random.default_rng(11).random(len(stream))
    bag, p_values = list(reference), []
    for score, theta in zip(stream, smoothing):
        bag.append(score)
        seen = np.array(bag)
        p_values.append((np.sum(seen > score) + theta * np.sum(seen == score)) / len(seen))
    expected = simple_jumper(p_values, jump=0.02)
    monitor = ExchangeabilityMonitor(jump=0.02, seed=11).fit(reference)
    path = [monitor.update(part).log_evidence_ for part in np.array_split(stream, [1, 300, 301])]
    assert path == pytest.approx(expected[[0, 299, 300, -1]], rel=1e-9)
    assert monitor.alarm_at_ == int(np.argmax(expected >= math.log(1 / 0.05))) + 1


def test_refitting_starts_over():
    rng = np.random.default_rng(8)
    monitor = ExchangeabilityMonitor(seed=0).fit(rng.normal(size=200)).update(rng.normal(2.0, size=200))
    assert monitor.alarm_
    monitor.fit(rng.normal(2.0, size=200))
    assert (monitor.alarm_, monitor.alarm_at_, monitor.n_, monitor.evidence_) == (False, None, 0, 1.0)
    assert not monitor.update(rng.normal(2.0, size=200)).alarm_
