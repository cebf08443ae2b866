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


def test_one_failure_that_says_the_expert_is_gone_opens_it_at_once(breaker: CircuitBreaker) -> None:
    breaker.trip()
    assert breaker.state == "open" and not breaker.allow() and breaker.consecutive_failures == 1


@pytest.fixture
def probed(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock, probed=True)
    breaker.trip()
    return breaker


def test_a_probed_breaker_lets_no_call_through_until_its_check_passes(probed: CircuitBreaker, clock: Clock) -> None:
    clock.now += 60
    assert not probed.allow() and probed.state == "open"
    probed.probe_passed()
    assert [probed.allow() for _ in range(3)] == [True, False, False] and probed.state == "half-open"
    probed.record_success()
    assert probed.state == "closed" and probed.allow()


def test_a_check_is_due_once_per_cooldown_while_open(probed: CircuitBreaker, clock: Clock) -> None:
    assert not probed.probe_due()
    clock.now += 10
    assert [probed.probe_due() for _ in range(3)] == [True, False, False]
    clock.now += 10  # the first check never reported back: another one is due
    assert probed.probe_due()


def test_a_failed_check_keeps_it_open_for_another_cooldown(probed: CircuitBreaker, clock: Clock) -> None:
    clock.now += 10
    assert probed.probe_due()
    clock.now += 3
    probed.probe_failed()
    clock.now += 9.999
    assert not probed.probe_due() and probed.state == "open"
    clock.now += 0.001
    assert probed.probe_due()


def test_a_failed_probe_call_after_a_passed_check_reopens_it(probed: CircuitBreaker, clock: Clock) -> None:
    clock.now += 10
    probed.probe_due()
    probed.probe_passed()
    assert probed.allow()
    probed.record_failure()
    assert probed.state == "open" and not probed.allow()


def test_checks_belong_to_probed_breakers_only(breaker: CircuitBreaker, clock: Clock) -> None:
    breaker.trip()
    clock.now += 10
    assert not breaker.probe_due() and breaker.allow() and breaker.state == "half-open"
