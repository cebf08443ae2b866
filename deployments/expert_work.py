"""Admission to an expert replica's work: a bounded number of calls compute at once, and a call whose
requester can no longer use its answer is dropped before it starts.

The router sends each expert call with its request's deadline (wall-clock seconds,
:func:`deployments.deadline.expert_deadline`). In the replica a call waits for one of ``slots``; when its
turn comes and the time left is less than the replica's typical recent call (:class:`RecentCalls`), it
is dropped (:class:`DeadlineExceeded`, answered degraded by the router) instead of computing an answer
nobody waits for. A caller that gives up while waiting leaves the queue at once. Work that cannot be
cancelled (an expert computing in a worker thread) keeps its slot until it really ends, so the bound
holds for what the replica's CPU does, not for what callers still await; an engine's call (vLLM, an
HTTP server) is cancelled with its caller and frees its slot then.

The deadline is wall-clock time, so the router's and the expert's clocks must agree (NTP-synchronised
nodes are within milliseconds; the check only decides whether to start).

>>> import asyncio
>>> work = ExpertWork(slots=1, cancellable=False)
>>> async def judge():
...     return "answer"
>>> asyncio.run(work.run(judge, deadline_at=None))
'answer'
>>> asyncio.run(work.run(judge, deadline_at=0.0))   # doctest: +ELLIPSIS
Traceback (most recent call last):
...
deployments.deadline.DeadlineExceeded: dropped before it started: the deadline passed ... ms ago; ...
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from deployments.deadline import DeadlineExceeded

T = TypeVar("T")


class RecentCalls:
    """How long the replica's last calls took; ``typical_s`` is the median of those finished within
    ``stale_s``, once at least ``least`` did. The median, not the mean, and never from one call alone: a
    slow first call (loading the model) cannot make the replica drop everything; and a dropped call
    measures nothing, so an estimate no call has confirmed for ``stale_s`` is forgotten. The median
    follows the machine: when the cores are shared and calls take longer, a call that would finish
    after its deadline is not started.

    >>> now = [0.0]
    >>> calls = RecentCalls(stale_s=10.0, least=3, clock=lambda: now[0])
    >>> calls.observe(10_000.0); calls.typical_s()       # one call says little
    0.0
    >>> calls.observe(300.0); calls.observe(320.0); calls.typical_s()
    0.32
    >>> now[0] = 11.0; calls.typical_s()
    0.0
    """

    def __init__(self, size: int = 20, stale_s: float = 10.0, least: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_s, self.least, self._clock = stale_s, least, clock
        self._calls: deque[tuple[float, float]] = deque(maxlen=size)

    def observe(self, ms: float) -> None:
        self._calls.append((self._clock(), ms))

    def typical_s(self) -> float:
        """The median recent call in seconds (0 when fewer than ``least`` finished within ``stale_s``)."""
        now = self._clock()
        recent = sorted(ms for at, ms in self._calls if now - at <= self.stale_s)
        return recent[len(recent) // 2] / 1000.0 if len(recent) >= self.least else 0.0


class ExpertWork:
    """At most ``slots`` calls computing at once in one replica; late calls dropped before they start."""

    def __init__(self, slots: int, cancellable: bool, clock: Callable[[], float] = time.time) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots, self.cancellable, self._clock = slots, cancellable, clock
        self._free = asyncio.Semaphore(slots)
        self.calls = RecentCalls()
        self.dropped = 0
        self.running = 0

    async def run(self, work: Callable[[], Awaitable[T]], deadline_at: float | None) -> T:
        """``await work()`` in a free slot, unless ``deadline_at`` (wall-clock seconds) leaves less than a
        typical recent call when the slot frees up."""
        await self._free.acquire()
        left = None if deadline_at is None else deadline_at - self._clock()
        expected = self.calls.typical_s()
        if left is not None and left <= expected:
            self._free.release()
            self.dropped += 1
            missed = f"passed {-left * 1000:.0f} ms ago" if left <= 0 else f"leaves {left * 1000:.0f} ms"
            raise DeadlineExceeded(f"dropped before it started: the deadline {missed}; a typical recent call "
                                   f"here takes {expected * 1000:.0f} ms")
        self.running += 1
        started = time.perf_counter()
        task: asyncio.Future[Any] = asyncio.ensure_future(work())
        task.add_done_callback(lambda done: self._finished(done, started))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self.cancellable:
                task.cancel()
            raise

    def state(self) -> dict[str, Any]:
        """Slots, calls computing now, calls dropped so far, the typical recent call (ms)."""
        return {"slots": self.slots, "running": self.running, "dropped": self.dropped,
                "typical_recent_call_ms": round(self.calls.typical_s() * 1000.0, 1)}

    def _finished(self, done: asyncio.Future[Any], started: float) -> None:
        self.running -= 1
        self._free.release()
        if not done.cancelled() and done.exception() is None:
            self.calls.observe((time.perf_counter() - started) * 1000.0)
