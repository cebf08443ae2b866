"""One budget for many router replicas: the ledger's leases, the replica's side, restarts (no Ray)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from policies.leases import BudgetLedger, Lease, LeasedBudget, Report
from policies.online import OnlineController


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingController(OnlineController):
    """The real controller, keeping every block of decisions the ledger appends to its window."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.appended: list[np.ndarray] = []

    def record(self, deferred: Any, wanted: int, forced: int = 0) -> None:
        self.appended.append(np.asarray(deferred, dtype=bool).copy())
        super().record(deferred, wanted, forced)


async def settle() -> None:
    """Let every ready task (exchanges and their replies) run."""
    for _ in range(20):
        await asyncio.sleep(0)


def max_in_any_window(mask: np.ndarray, window: int) -> int:
    counts = np.concatenate([[0], np.cumsum(mask)])
    return int((counts[window:] - counts[:-window]).max()) if len(mask) >= window else int(mask.sum())


def test_leases_share_the_hard_cap_room_between_replicas() -> None:
    ledger = BudgetLedger(OnlineController(target=0.1, threshold=0.0, hard_cap=0.1, window=100), lease_deferrals=4)
    grants = [ledger.exchange(Report(replica=f"r{i}")).deferrals for i in range(4)]
    assert grants == [4, 4, 2, 0] and ledger.reserved == 10


def test_reported_use_frees_a_leases_reservation_and_fills_the_window() -> None:
    ledger = BudgetLedger(OnlineController(target=0.1, threshold=0.0, hard_cap=0.1, window=100), lease_deferrals=4)
    lease = ledger.exchange(Report(replica="a"))
    ledger.exchange(Report(replica="a", decisions=20, wanted=6, used={lease.lease_id: 3}, closed=[lease.lease_id]))
    state = ledger.state()
    assert state["window_deferrals"] == 3 and state["decisions"] == 20 and state["reserved"] == 4


def test_an_unreported_lease_expires_and_returns_its_allowance() -> None:
    clock = Clock()
    ledger = BudgetLedger(OnlineController(target=0.1, threshold=0.0, hard_cap=0.1, window=100), lease_deferrals=10,
                          ttl_s=5.0, clock=clock)
    ledger.exchange(Report(replica="dead"))
    assert ledger.exchange(Report(replica="b")).deferrals == 0
    clock.now += 5.0
    assert ledger.exchange(Report(replica="b")).deferrals == 10


def test_reports_move_the_threshold_toward_the_target_rate() -> None:
    ledger = BudgetLedger(OnlineController(target=0.2, threshold=0.5, learning_rate=0.01, window=100))
    before = ledger.controller.threshold
    ledger.exchange(Report(replica="a", decisions=10, wanted=6))
    assert ledger.controller.threshold == pytest.approx(before + 0.01 * (6 - 0.2 * 10))


def test_a_restored_ledger_keeps_target_threshold_window_and_leases() -> None:
    ledger = BudgetLedger(OnlineController(target=0.2, threshold=0.5, hard_cap=0.3, window=50), lease_deferrals=4)
    ledger.set_target(0.25)
    lease = ledger.exchange(Report(replica="a"))
    ledger.exchange(Report(replica="a", decisions=70, wanted=30, used={lease.lease_id: 4}))
    restored = BudgetLedger.restore(json.loads(json.dumps(ledger.snapshot())), lease_deferrals=4)
    unseen = {"replicas"}  # which replicas exchanged lately is not kept across a restart
    assert {k: v for k, v in restored.state().items() if k not in unseen} == \
        {k: v for k, v in ledger.state().items() if k not in unseen}
    assert restored.exchange(Report(replica="b")).lease_id == ledger.exchange(Report(replica="b")).lease_id


async def _serve_replicas(seed: int, replicas: int, steps: int) -> tuple[RecordingController, int]:
    """Replicas decide random batches of always-deferrable samples while their exchanges complete
    in a random order; returns the controller and how many samples were deferred."""
    rng = np.random.default_rng(seed)
    controller = RecordingController(target=0.1, threshold=0.0, learning_rate=1e-9, hard_cap=0.1, window=100)
    ledger = BudgetLedger(controller, lease_deferrals=4, ttl_s=1e9)
    waiting: list[tuple[asyncio.Future[Lease], Report]] = []

    async def exchange(report: Report) -> Lease:
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiting.append((future, report))
        return await future

    budgets = [LeasedBudget(f"r{i}", exchange, threshold=0.0, hard_cap=0.1, ttl_s=1e9) for i in range(replicas)]
    deferred = 0
    for _ in range(steps):
        if waiting and rng.random() < 0.4:
            future, report = waiting.pop(int(rng.integers(len(waiting))))
            future.set_result(ledger.exchange(report))
        else:
            budget = budgets[int(rng.integers(replicas))]
            deferred += int(budget.decide(rng.uniform(1, 2, int(rng.integers(1, 9)))).sum())
        await settle()
    while waiting:  # deliver the last reports
        future, report = waiting.pop()
        future.set_result(ledger.exchange(report))
        await settle()
    return controller, deferred


@pytest.mark.parametrize("seed", range(5))
def test_the_hard_cap_holds_over_all_replicas_traffic(seed: int) -> None:
    controller, deferred = asyncio.run(_serve_replicas(seed, replicas=3, steps=3000))
    appended = np.concatenate(controller.appended)
    assert appended.sum() == deferred  # every deferral was reported
    assert max_in_any_window(appended, 100) <= 10
    assert deferred >= 0.5 * 0.1 * len(appended)  # and the cap's room is used, not starved


def test_a_replica_without_a_lease_defers_nothing_then_defers_its_highest_scores() -> None:
    async def run() -> tuple[np.ndarray, np.ndarray]:
        ledger = BudgetLedger(OnlineController(target=0.5, threshold=0.0, hard_cap=0.5, window=100), lease_deferrals=2)

        async def exchange(report: Report) -> Lease:
            return ledger.exchange(report)

        budget = LeasedBudget("a", exchange, threshold=0.0, hard_cap=0.5)
        first = budget.decide(np.array([0.9, 0.8, 0.7]))
        await settle()
        return first, budget.decide(np.array([0.1, 0.9, -1.0, 0.5]))

    first, second = asyncio.run(run())
    assert not first.any() and second.tolist() == [False, True, False, True]


def test_an_expired_lease_is_not_used() -> None:
    async def run() -> np.ndarray:
        clock = Clock()
        ledger = BudgetLedger(OnlineController(target=0.5, threshold=0.0, window=100), lease_deferrals=8, ttl_s=5.0)

        async def exchange(report: Report) -> Lease:
            return ledger.exchange(report)

        budget = LeasedBudget("a", exchange, threshold=0.0, hard_cap=0.5, ttl_s=5.0, clock=clock)
        budget.decide(np.array([-1.0]))
        await settle()
        clock.now += 5.0
        return budget.triage(np.array([1.0, 2.0]))

    decisions = asyncio.run(run())
    assert not decisions.defer.any() and decisions.forced.all()


def test_without_a_hard_cap_a_replica_defers_what_the_rule_defers_lease_or_not() -> None:
    async def run() -> tuple[np.ndarray, np.ndarray]:
        ledger = BudgetLedger(OnlineController(target=0.5, threshold=0.0, window=100), lease_deferrals=2)

        async def exchange(report: Report) -> Lease:
            return ledger.exchange(report)

        budget = LeasedBudget("a", exchange, threshold=0.0, hard_cap=None)
        first = budget.triage(np.array([0.9, 0.8, 0.7]))   # no lease yet
        await settle()
        return first, budget.triage(np.full(40, 1.0))      # far beyond one lease's 2 deferrals

    first, burst = asyncio.run(run())
    assert first.defer.all() and burst.defer.all() and not first.forced.any() and not burst.forced.any()


def test_forced_acceptances_reach_the_ledger_and_its_status() -> None:
    async def run() -> tuple[Any, dict[str, Any]]:
        ledger = BudgetLedger(OnlineController(target=0.1, threshold=0.0, hard_cap=0.1, window=100,
                                               coverage="rules"), lease_deferrals=4)

        async def exchange(report: Report) -> Lease:
            return ledger.exchange(report)

        budget = LeasedBudget("a", exchange, threshold=0.0, hard_cap=0.1)
        await budget.start()
        decisions = budget.triage(np.full(10, 1.0))        # 4 allowed, 6 forced
        await settle()
        return decisions, ledger.state()

    decisions, state = asyncio.run(run())
    assert decisions.defer.sum() == 4 and decisions.forced.sum() == 6
    assert np.array_equal(decisions.covered, decisions.defer)
    assert state["forced_in_window"] == 6 and state["forced_total"] == 6


def test_a_failed_exchange_keeps_its_report_for_the_next_one() -> None:
    async def run() -> list[Report]:
        clock = Clock()
        delivered: list[Report] = []
        ledger = BudgetLedger(OnlineController(target=0.5, threshold=0.0, window=100))
        up = [False]

        async def exchange(report: Report) -> Lease:
            if not up[0]:
                raise ConnectionError("holder restarting")
            delivered.append(report)
            return ledger.exchange(report)

        budget = LeasedBudget("a", exchange, threshold=0.0, hard_cap=None, ttl_s=5.0, clock=clock)
        budget.decide(np.array([1.0, -1.0]))
        await settle()
        up[0] = True
        budget.decide(np.array([-1.0]))  # backing off: no exchange yet
        await settle()
        clock.now += 1.0
        budget.decide(np.array([-1.0]))
        await settle()
        return delivered

    delivered = asyncio.run(run())
    assert len(delivered) == 1 and (delivered[0].decisions, delivered[0].wanted) == (4, 1)


def test_a_started_replica_defers_from_its_first_batch() -> None:
    async def run() -> np.ndarray:
        ledger = BudgetLedger(OnlineController(target=0.5, threshold=0.0, hard_cap=0.5, window=100), lease_deferrals=2)

        async def exchange(report: Report) -> Lease:
            return ledger.exchange(report)

        budget = LeasedBudget("a", exchange, threshold=0.0, hard_cap=0.5)
        await budget.start()
        return budget.decide(np.array([0.9, -0.8, 0.7]))

    assert asyncio.run(run()).tolist() == [True, False, True]


def test_reports_keep_the_certified_clamp_and_a_restore_keeps_clamp_and_tie_rule() -> None:
    controller = OnlineController(target=0.2, threshold=0.3, tie_break=0.4, tie_seed=7, min_threshold=0.3)
    controller.record(np.zeros(50, dtype=bool), wanted=0)  # would lower the threshold: the clamp holds it
    restored = OnlineController.restore(json.loads(json.dumps(controller.snapshot())))
    assert controller.threshold == 0.3 and restored.threshold == 0.3
    assert (restored.min_threshold, restored.max_threshold) == (0.3, np.inf)
    assert (restored.tie_break, restored.tie_seed, restored.certified_threshold) == (0.4, 7, 0.3)


def test_a_leased_replica_breaks_ties_with_the_certificate_rule() -> None:
    async def run() -> tuple[np.ndarray, np.ndarray]:
        controller = OnlineController(target=0.5, threshold=0.3, window=100, tie_break=0.5, tie_seed=3)
        ledger = BudgetLedger(controller, lease_deferrals=100)

        async def exchange(report: Report) -> Lease:
            return ledger.exchange(report)

        budget = LeasedBudget("a", exchange, threshold=0.3, hard_cap=None)
        await budget.start()
        texts = [f"mail {i}" for i in range(40)]
        reference = OnlineController(target=0.5, threshold=0.3, window=100, tie_break=0.5, tie_seed=3)
        return budget.decide(np.full(40, 0.3), texts), reference.decide(np.full(40, 0.3), texts)

    leased, controller = asyncio.run(run())
    assert leased.tolist() == controller.tolist() and 0 < leased.sum() < 40
