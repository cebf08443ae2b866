"""One deferral budget shared by many router replicas: a ledger leases deferral allowance in chunks.

The :class:`BudgetLedger` holds the app's :class:`~policies.online.OnlineController` (target,
threshold, sliding window, hard cap). A router replica's :class:`LeasedBudget` decides each batch
locally at the leased threshold, deferring at most the allowance it holds, and reports what it did
in an exchange that returns its next lease: no call on the request path, one exchange in flight
per replica.

Why the hard cap holds over the app's traffic: a lease is granted only from room that is free now,
``cap - (deferrals among the last window-1 reported decisions) - (allowance still reserved by
other leases)``; reported deferrals join the window after every decision reported before them, so
any ``window`` consecutive reported decisions hold at most the cap. An unreported lease expires
after ``ttl_s``; the replica stops using it earlier (its clock starts when it asked). Without a hard
cap there is nothing to protect: a replica defers whatever the rule defers, lease or not. With one,
what the rule defers beyond the replica's allowance is *forced* (answered by the small tier),
returned per sample and reported, so the app's status and the verdicts say so.

>>> from policies.online import OnlineController
>>> ledger = BudgetLedger(OnlineController(target=0.1, threshold=0.5, hard_cap=0.1, window=100), lease_deferrals=8)
>>> first = ledger.exchange(Report(replica="a"))
>>> first.deferrals, ledger.exchange(Report(replica="b")).deferrals
(8, 2)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policies.online import Decisions, OnlineController, capped
from policies.ties import NO_TIE_BREAK, defer_mask, keys_for_ties


@dataclass(frozen=True)
class Lease:
    """May defer up to ``deferrals`` samples scoring above ``threshold`` (ties by the certificate's
    rule: ``tie_break``, ``tie_seed``), for ``ttl_s`` seconds; ``covered``: the certificate covers
    this rule; ``coverage``: how (:class:`~policies.online.OnlineController`)."""

    lease_id: int
    threshold: float
    deferrals: int
    ttl_s: float
    state: dict[str, Any] = field(default_factory=dict)
    tie_break: float = NO_TIE_BREAK
    tie_seed: int | None = None
    covered: bool = False
    coverage: str | None = None


@dataclass
class Report:
    """What a replica decided since its last report: counts, and deferrals per lease it used."""

    replica: str
    tenant: str | None = None
    decisions: int = 0
    wanted: int = 0
    forced: int = 0
    used: dict[int, int] = field(default_factory=dict)
    closed: list[int] = field(default_factory=list)

    @property
    def deferred(self) -> int:
        return sum(self.used.values())

    def merge(self, later: Report) -> None:
        """Fold a later report into this one (when this one could not be delivered)."""
        self.decisions += later.decisions
        self.wanted += later.wanted
        self.forced += later.forced
        for lease_id, count in later.used.items():
            self.used[lease_id] = self.used.get(lease_id, 0) + count
        self.closed += later.closed


class BudgetLedger:
    """The app's budget: the controller, the outstanding leases and what they reserve."""

    def __init__(self, controller: OnlineController, lease_deferrals: int = 16, ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if lease_deferrals < 1:
            raise ValueError(f"lease_deferrals must be at least 1, got {lease_deferrals}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.controller = controller
        self.lease_deferrals = lease_deferrals
        self.ttl_s = ttl_s
        self._clock = clock
        self._reserved: dict[int, int] = {}
        self._expires: dict[int, float] = {}
        self._seen: dict[str, float] = {}
        self._next_id = 1
        self.info: dict[str, Any] = {}
        """what the owner adds to every state and lease (the holder: the served certificate's id and watch)"""

    @property
    def reserved(self) -> int:
        """Deferrals granted by live leases and not reported yet."""
        return sum(self._reserved.values())

    def exchange(self, report: Report) -> Lease:
        """Account for ``report``, then grant the replica its next lease."""
        self._expire()
        self._seen[report.replica] = self._clock()
        if report.decisions:
            deferred = min(report.deferred, report.decisions)
            mask = np.zeros(report.decisions, dtype=bool)
            mask[report.decisions - deferred:] = True
            self.controller.record(mask, report.wanted, report.forced)
        for lease_id, count in report.used.items():
            if lease_id in self._reserved:
                self._reserved[lease_id] = max(self._reserved[lease_id] - count, 0)
        for lease_id in report.closed:
            self._reserved.pop(lease_id, None)
            self._expires.pop(lease_id, None)
        room = self.controller.state()["cap_remaining"] - self.reserved
        grant = int(min(self.lease_deferrals, max(room, 0)))
        lease_id = self._next_id
        self._next_id += 1
        self._reserved[lease_id] = grant
        self._expires[lease_id] = self._clock() + self.ttl_s
        return Lease(lease_id=lease_id, threshold=self.controller.threshold, deferrals=grant, ttl_s=self.ttl_s,
                     state=self.state(), tie_break=self.controller.tie_break, tie_seed=self.controller.tie_seed,
                     covered=self.controller.covers_rule(), coverage=self.controller.coverage)

    def shrink(self, lease_id: int, deferrals: int) -> None:
        """Reserve at most ``deferrals`` for a lease just granted (another cap granted less)."""
        if lease_id in self._reserved:
            self._reserved[lease_id] = min(self._reserved[lease_id], max(int(deferrals), 0))

    def live_leases(self) -> list[int]:
        """Ids of the leases that still reserve allowance."""
        self._expire()
        return list(self._reserved)

    def set_target(self, target: float) -> None:
        """Change the app's target (refused above the hard cap, as the controller refuses it)."""
        self.controller.set_target(target)

    def state(self) -> dict[str, Any]:
        """The controller's state plus the leases: allowance reserved, how many are live, and how many
        replicas exchanged within the last ``ttl_s``."""
        now = self._clock()
        replicas = sum(1 for at in self._seen.values() if now - at < self.ttl_s)
        return {**self.controller.state(), "reserved": self.reserved, "leases": len(self._reserved),
                "replicas": replicas, **self.info}

    def snapshot(self) -> dict[str, Any]:
        """Everything a restarted holder needs, JSON-ready: the controller and the live leases."""
        self._expire()
        return {"controller": self.controller.snapshot(), "reserved": {str(k): v for k, v in self._reserved.items()},
                "next_id": self._next_id}

    @classmethod
    def restore(cls, snapshot: dict[str, Any], lease_deferrals: int = 16, ttl_s: float = 5.0,
                clock: Callable[[], float] = time.monotonic) -> BudgetLedger:
        """The ledger of ``snapshot``; its live leases get a fresh ``ttl_s`` (replicas may still use them)."""
        ledger = cls(OnlineController.restore(snapshot["controller"]), lease_deferrals, ttl_s, clock)
        ledger._reserved = {int(k): int(v) for k, v in snapshot["reserved"].items()}
        ledger._expires = {k: clock() + ttl_s for k in ledger._reserved}
        ledger._next_id = int(snapshot["next_id"])
        return ledger

    def _expire(self) -> None:
        now = self._clock()
        for lease_id in [k for k, at in self._expires.items() if at <= now]:
            self._reserved.pop(lease_id, None)
            self._expires.pop(lease_id)


Exchange = Callable[[Report], Awaitable[Lease]]


class LeasedBudget:
    """A router replica's share of the budget: decides batches locally, exchanges reports for leases.

    Before its first lease (and once a lease expires unrenewed) it defers nothing: :meth:`start`
    gets the first one, and every lease is renewed after ``ttl_s / 3`` even with no traffic, so an
    idle replica still holds a live lease when the next request comes. An exchange that fails or
    takes over ``ttl_s`` keeps its report for the next one (counted twice if the ledger did get it:
    the cap errs on the safe side) and is retried ``ttl_s / 5`` later.
    """

    def __init__(self, replica: str, exchange: Exchange, threshold: float, hard_cap: float | None,
                 ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic, tenant: str | None = None) -> None:
        self.replica = replica
        self.tenant = tenant
        self.hard_cap = hard_cap
        self.ttl_s = ttl_s
        self._exchange_fn = exchange
        self._clock = clock
        self._threshold = float(threshold)
        self._lease: Lease | None = None
        self._left = 0
        self._valid_until = -np.inf
        self._pending = Report(replica=replica, tenant=tenant)
        self._in_flight: asyncio.Task[None] | None = None
        self._retry_at = -np.inf
        self._state: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def threshold(self) -> float:
        return self._threshold

    def triage(self, scores: np.ndarray, samples: Sequence[str] | np.ndarray | None = None) -> Decisions:
        """:class:`~policies.online.Decisions` for a batch: the rule's deferrals, within the allowance when
        there is a hard cap (its highest scores first); ``samples`` break ties at the threshold by the
        certificate's rule, as the controller does."""
        scores = np.asarray(scores, dtype=float).reshape(-1)
        wanted = self._wanted(scores, samples)
        lease = self._lease if self._clock() < self._valid_until else None
        defer = wanted
        if self.hard_cap is not None:
            defer = capped(scores, wanted, self._left if lease is not None else 0)
        forced = wanted & ~defer
        deferred = int(np.count_nonzero(defer))
        self._pending.decisions += len(scores)
        self._pending.wanted += int(np.count_nonzero(wanted))
        self._pending.forced += int(np.count_nonzero(forced))
        if lease is not None and deferred:
            self._left -= deferred
            self._pending.used[lease.lease_id] = self._pending.used.get(lease.lease_id, 0) + deferred
        self.sync()
        rule = self._lease
        covered = np.full(len(scores), rule is not None and rule.covered)
        if rule is not None and rule.coverage == "rules":
            covered &= ~forced
        return Decisions(defer, forced, covered)

    def decide(self, scores: np.ndarray, samples: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """The defer mask of :meth:`triage`."""
        return self.triage(scores, samples).defer

    async def start(self) -> None:
        """Get the first lease now (a router replica calls this before taking traffic)."""
        self.sync()
        if self._in_flight is not None:
            await asyncio.shield(self._in_flight)

    def _wanted(self, scores: np.ndarray, samples: Sequence[str] | np.ndarray | None) -> np.ndarray:
        rule = self._lease
        if samples is None or rule is None or rule.tie_seed is None or rule.tie_break >= NO_TIE_BREAK:
            return defer_mask(scores, self._threshold)
        return defer_mask(scores, self._threshold, rule.tie_break,
                          keys_for_ties(scores, self._threshold, samples, rule.tie_seed))

    def state(self) -> dict[str, Any]:
        """The app's budget state as of this replica's last exchange."""
        return dict(self._state)

    def sync(self) -> None:
        """Start an exchange now unless one is in flight or a failed one is backing off."""
        if self._in_flight is None and self._clock() >= self._retry_at:
            self._in_flight = asyncio.get_running_loop().create_task(self._exchange())

    async def _exchange(self) -> None:
        report, self._pending = self._pending, Report(replica=self.replica, tenant=self.tenant)
        asked_at = self._clock()
        try:
            lease = await asyncio.wait_for(self._exchange_fn(report), self.ttl_s)
        except Exception:
            report.merge(self._pending)
            self._pending = report
            self._retry_at = self._clock() + self.ttl_s / 5
            self._in_flight = None
            self._sync_later(self.ttl_s / 5)
            return
        if self._lease is not None:
            self._pending.closed.append(self._lease.lease_id)
        self._lease, self._left, self._valid_until = lease, lease.deferrals, asked_at + lease.ttl_s
        self._threshold, self._state = lease.threshold, dict(lease.state)
        self._in_flight = None
        if self._pending.decisions:
            self.sync()
        else:
            self._sync_later(self.ttl_s / 3)

    def _sync_later(self, delay_s: float) -> None:
        """Renew (or retry) after ``delay_s`` of the event loop's time, replacing any earlier timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay_s, self.sync)
