"""Several tenants on one app: a deferral budget per tenant, and optionally one cap over all of them.

:class:`TenantLedgers` holds one :class:`~policies.leases.BudgetLedger` per tenant (its own target,
hard cap and window, its own online controller serving the app's certified rule) and, when the app
has ``serve.app_hard_cap``, an app-wide ledger whose window counts every tenant's decisions. A router
replica exchanges reports for leases per tenant; a lease grants the least of what the tenant's cap
and the app's cap leave, so both caps hold over any window of reported decisions (the argument of
:mod:`policies.leases`, once per ledger: the app ledger reserves exactly what it granted).

>>> from policies.online import OnlineController
>>> def ledger(cap):
...     return BudgetLedger(OnlineController(target=0.1, threshold=0.5, hard_cap=cap, window=100), lease_deferrals=8)
>>> ledgers = TenantLedgers({"a": ledger(0.5), "b": ledger(0.5)}, app=ledger(0.1))
>>> [ledgers.exchange(Report(replica="r", tenant=t)).deferrals for t in ("a", "b", "a")]
[8, 2, 0]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from policies.leases import BudgetLedger, Lease, Report
from policies.online import OnlineController


class UnknownTenant(KeyError):
    """A report or a request for a tenant the app does not have."""


class TenantLedgers:
    """Per-tenant ledgers (``None``: the one tenant of an app without tenants) and the app-wide cap."""

    def __init__(self, ledgers: dict[str | None, BudgetLedger], app: BudgetLedger | None = None) -> None:
        if not ledgers:
            raise ValueError("TenantLedgers needs at least one tenant's ledger")
        self.ledgers = ledgers
        self.app = app
        self._app_lease: dict[tuple[str | None, int], int] = {}  # (tenant, tenant lease) -> app lease

    def ledger(self, tenant: str | None) -> BudgetLedger:
        try:
            return self.ledgers[tenant]
        except KeyError:
            raise UnknownTenant(f"no tenant {tenant!r}; tenants: {sorted(map(str, self.ledgers))}") from None

    def members(self) -> Iterator[tuple[str | None, BudgetLedger]]:
        yield from self.ledgers.items()

    def exchange(self, report: Report) -> Lease:
        """Account for a replica's report on its tenant's ledger (and the app's); the tenant's next lease."""
        ledger = self.ledger(report.tenant)
        if self.app is None:
            return ledger.exchange(report)
        tenant = report.tenant
        app_report = Report(replica=f"{tenant}/{report.replica}", tenant=tenant, decisions=report.decisions,
                            wanted=report.wanted, forced=report.forced,
                            used={self._app_lease[(tenant, k)]: v for k, v in report.used.items()
                                  if (tenant, k) in self._app_lease},
                            closed=[self._app_lease.pop((tenant, k)) for k in report.closed
                                    if (tenant, k) in self._app_lease])
        app_lease = self.app.exchange(app_report)
        lease = ledger.exchange(report)
        grant = min(lease.deferrals, app_lease.deferrals)
        ledger.shrink(lease.lease_id, grant)
        self.app.shrink(app_lease.lease_id, grant)
        self._app_lease[(tenant, lease.lease_id)] = app_lease.lease_id
        live = set(self.app.live_leases())
        self._app_lease = {k: v for k, v in self._app_lease.items() if v in live}
        return dataclasses.replace(lease, deferrals=grant, state={**lease.state, "app": self.app_state()})

    def app_state(self) -> dict[str, Any] | None:
        """The app-wide cap's window: decisions, deferrals, what the cap still allows."""
        if self.app is None:
            return None
        state = self.app.state()
        return {key: state[key] for key in ("hard_cap", "window", "decisions", "window_deferrals", "cap_remaining",
                                            "reserved")}

    def snapshot(self) -> dict[str, Any]:
        return {"tenants": {"" if t is None else t: ledger.snapshot() for t, ledger in self.ledgers.items()},
                "app": self.app.snapshot() if self.app is not None else None,
                "app_leases": [[t, k, v] for (t, k), v in self._app_lease.items()]}

    @classmethod
    def restore(cls, snapshot: dict[str, Any], lease_deferrals: int, ttl_s: float) -> TenantLedgers:
        ledgers = {None if name == "" else name: BudgetLedger.restore(body, lease_deferrals, ttl_s)
                   for name, body in snapshot["tenants"].items()}
        app = BudgetLedger.restore(snapshot["app"], lease_deferrals, ttl_s) if snapshot.get("app") else None
        restored = cls(ledgers, app)
        restored._app_lease = {(t, int(k)): int(v) for t, k, v in snapshot.get("app_leases", [])}
        return restored


def app_cap_ledger(hard_cap: float, window: int, lease_deferrals: int, ttl_s: float) -> BudgetLedger:
    """The app-wide ledger: only its window and cap matter (its rule is never served)."""
    controller = OnlineController(target=hard_cap, threshold=0.0, hard_cap=hard_cap, window=window, adapt=False)
    return BudgetLedger(controller, lease_deferrals, ttl_s)
