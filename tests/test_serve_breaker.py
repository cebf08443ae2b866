"""The expert's circuit breaker as a state machine, on an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from deployments.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock)


def test_a_closed_breaker_lets_every_call_through(breaker: CircuitBreaker) -> None:
    assert all(breaker.allow() for _ in range(50)) and breaker.state == "closed"


def test_it_opens_after_the_configured_consecutive_failures(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()


def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    for outcome in ("fail", "fail", "ok", "fail", "fail"):
        breaker.record_failure() if outcome == "fail" else breaker.record_success()
    assert breaker.state == "closed" and breaker.consecutive_failures == 2


def test_an_open_breaker_refuses_until_the_cooldown_passes(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 9.999
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.allow() and breaker.state == "half-open"


def test_half_open_lets_exactly_one_probe_through(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert [breaker.allow() for _ in range(4)] == [True, False, False, False]


def test_a_successful_probe_closes_the_circuit(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.consecutive_failures == 0 and breaker.allow()


def test_a_failed_probe_opens_it_for_another_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced_after_a_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    clock.now += 5
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow() and breaker.state == "half-open"


@pytest.mark.parametrize(("failures", "cooldown_s", "message"), [(0, 1.0, "failures"), (1, 0.0, "cooldown_s")])
def test_settings_out_of_range_are_refused(failures: int, cooldown_s: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(failures=failures, cooldown_s=cooldown_s)
