"""Tenants sharing one app: a budget each, and an app-wide cap over all of them (no Ray)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from policies.leases import BudgetLedger, Lease, LeasedBudget, Report
from policies.tenants import TenantLedgers, UnknownTenant, app_cap_ledger
from test_policies_leases import RecordingController, max_in_any_window, settle

CAPS = {"a": 0.3, "b": 0.1}
APP_CAP, WINDOW = 0.15, 100


async def _serve_tenants(seed: int, steps: int) -> tuple[dict[str, RecordingController], RecordingController, int]:
    """Two tenants, two replicas each, deciding random batches of always-deferrable samples while their
    exchanges complete in random order."""
    rng = np.random.default_rng(seed)
    controllers = {name: RecordingController(target=cap, threshold=0.0, learning_rate=1e-9, hard_cap=cap,
                                             window=WINDOW) for name, cap in CAPS.items()}
    app = RecordingController(target=APP_CAP, threshold=0.0, hard_cap=APP_CAP, window=WINDOW, adapt=False)
    ledgers = TenantLedgers({name: BudgetLedger(c, lease_deferrals=4, ttl_s=1e9) for name, c in controllers.items()},
                            app=BudgetLedger(app, lease_deferrals=4, ttl_s=1e9))
    waiting: list[tuple[asyncio.Future[Lease], Report]] = []

    async def exchange(report: Report) -> Lease:
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiting.append((future, report))
        return await future

    budgets = [LeasedBudget(f"r{i}", exchange, threshold=0.0, hard_cap=CAPS[tenant], ttl_s=1e9, tenant=tenant)
               for i in range(2) for tenant in CAPS]
    deferred = 0
    for _ in range(steps):
        if waiting and rng.random() < 0.4:
            future, report = waiting.pop(int(rng.integers(len(waiting))))
            future.set_result(ledgers.exchange(report))
        else:
            deferred += int(budgets[int(rng.integers(len(budgets)))].decide(rng.uniform(1, 2, int(rng.integers(1, 9))))
                            .sum())
        await settle()
    while waiting:
        future, report = waiting.pop()
        future.set_result(ledgers.exchange(report))
        await settle()
    return controllers, app, deferred


@pytest.mark.parametrize("seed", range(4))
def test_each_tenants_cap_and_the_app_cap_hold_over_all_replicas(seed: int) -> None:
    controllers, app, deferred = asyncio.run(_serve_tenants(seed, steps=3000))
    app_window = np.concatenate(app.appended)
    assert app_window.sum() == deferred == sum(np.concatenate(c.appended).sum() for c in controllers.values())
    assert max_in_any_window(app_window, WINDOW) <= APP_CAP * WINDOW
    for name, controller in controllers.items():
        assert max_in_any_window(np.concatenate(controller.appended), WINDOW) <= CAPS[name] * WINDOW
    assert deferred >= 0.5 * APP_CAP * len(app_window)  # the app's room is used, not starved


def test_without_an_app_cap_tenants_do_not_share_room_and_unknown_tenants_are_refused() -> None:
    def ledger() -> BudgetLedger:
        return BudgetLedger(RecordingController(target=0.1, threshold=0.0, hard_cap=0.1, window=50), lease_deferrals=8)

    ledgers = TenantLedgers({"a": ledger(), "b": ledger()})
    assert [ledgers.exchange(Report(replica="r", tenant=t)).deferrals for t in ("a", "a", "b")] == [5, 0, 5]
    with pytest.raises(UnknownTenant, match="'c'"):
        ledgers.exchange(Report(replica="r", tenant="c"))


def test_a_restored_set_of_ledgers_keeps_each_window_and_the_app_leases() -> None:
    ledgers = TenantLedgers({"a": app_cap_ledger(0.5, 20, 4, 60.0), "b": app_cap_ledger(0.5, 20, 4, 60.0)},
                            app=app_cap_ledger(0.2, 20, 4, 60.0))
    first = ledgers.exchange(Report(replica="r", tenant="a"))
    ledgers.exchange(Report(replica="r", tenant="a", decisions=10, wanted=4, used={first.lease_id: 4}))
    restored = TenantLedgers.restore(json.loads(json.dumps(ledgers.snapshot())), 4, 60.0)
    assert restored.snapshot() == ledgers.snapshot()
    assert restored.app_state()["window_deferrals"] == 4 and restored.ledger("a").state()["window_deferrals"] == 4
    assert restored.exchange(Report(replica="r", tenant="b")).deferrals == ledgers.exchange(
        Report(replica="r", tenant="b")).deferrals
