"""Per-request latency budgets: a deferred sample whose expert answer cannot arrive in time is not waited for.

A request's deadline is ``serve.deadline_ms`` or its ``X-Cascade-Deadline-Ms`` header, counted from
its arrival at the router. Before asking the expert, the service compares the time left with what
the expert has recently taken (:class:`ExpertLatency`, a moving mean of its calls): if the
answer cannot arrive in time, the deferred samples keep the small tier's verdict at once, flagged
``degraded`` with ``degraded_reason: "deadline"``; otherwise the expert call may run at most the
time left (its own timeout still applies). A deadline miss is no expert failure: the circuit breaker
does not count it.

>>> now = [0.0]
>>> latency = ExpertLatency(stale_s=10.0, clock=lambda: now[0])
>>> latency.expected_s()      # nothing measured yet: the expert is tried
0.0
>>> for ms in (100.0, 120.0, 110.0):
...     latency.observe(ms)
>>> round(latency.expected_s(), 3) > 0.1
True
>>> now[0] = 11.0; latency.expected_s()   # no answer for 11 s: tried again
0.0
"""

from __future__ import annotations

import contextvars
import math
import time
from typing import Any

MAX_DEADLINE_MS = 3_600_000.0
DEADLINE_HEADER = "X-Cascade-Deadline-Ms"
_EXPERT_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("cascade_expert_deadline",
                                                                                 default=None)


class DeadlineExceeded(TimeoutError):
    """The request's deadline left no time for the expert (not an expert failure)."""


class ExpertLatency:
    """Exponentially weighted mean of the expert's latency; ``expected_s`` is that typical call.

    A request with less time left than a typical call skips the expert; one with more tries it, cut
    off at the time left. (A pessimistic estimate, e.g. mean + 2 sd, skipped the expert in most
    requests of the overload benchmark that a warm app answered in time.)

    ``weight`` is the share of a new observation (0.1: about the last 10 calls). An estimate older
    than ``stale_s`` is forgotten: a slow spell must not keep the expert skipped for ever (nothing
    skipped is measured), so after ``stale_s`` without an answer the next deferred sample tries the
    expert again, within the time its request has left. A call cut off by its deadline counts as
    having taken that long (it took at least that)."""

    def __init__(self, weight: float = 0.1, stale_s: float = 10.0, clock: Any = time.monotonic) -> None:
        self.weight, self.stale_s, self._clock = weight, stale_s, clock
        self._mean: float | None = None
        self._at = -math.inf

    def observe(self, ms: float) -> None:
        self._at = self._clock()
        if self._mean is None:
            self._mean = ms
            return
        self._mean += self.weight * (ms - self._mean)

    def expected_s(self) -> float:
        """The expert's typical latency lately, in seconds (0 with no recent answer: try it)."""
        if self._mean is None or self._clock() - self._at > self.stale_s:
            return 0.0
        return self._mean / 1000.0


class Deadline:
    """The time left for one request: ``started`` is ``time.perf_counter()`` at its arrival."""

    def __init__(self, started: float, budget_ms: float | None) -> None:
        self.started = started
        self.budget_s = None if budget_ms is None else budget_ms / 1000.0

    def remaining_s(self) -> float:
        """Seconds left (``inf`` without a deadline; may be negative)."""
        if self.budget_s is None:
            return math.inf
        return self.budget_s - (time.perf_counter() - self.started)

    def wall_at(self) -> float | None:
        """The deadline as wall-clock seconds (``time.time()``), what another process can check; None without one."""
        left = self.remaining_s()
        return None if math.isinf(left) else time.time() + left


def send_deadline(deadline: Deadline | None) -> contextvars.Token[float | None]:
    """Make ``deadline`` the one expert calls started from this context carry (:func:`expert_deadline`);
    undo with :func:`unsend_deadline`."""
    return _EXPERT_DEADLINE.set(None if deadline is None else deadline.wall_at())


def unsend_deadline(token: contextvars.Token[float | None]) -> None:
    _EXPERT_DEADLINE.reset(token)


def expert_deadline() -> float | None:
    """The wall-clock deadline an expert call made now should carry to the expert replica (None: none)."""
    return _EXPERT_DEADLINE.get()


def parse_deadline_header(value: str | None) -> float | None:
    """The header's deadline in ms (``None`` when absent); ``ValueError`` naming the problem otherwise."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        raise ValueError(f"{DEADLINE_HEADER} must be a number of milliseconds, got {value!r}") from None
    if not 0 < ms <= MAX_DEADLINE_MS or not math.isfinite(ms):
        raise ValueError(f"{DEADLINE_HEADER} must lie in (0, {MAX_DEADLINE_MS:.0f}] ms, got {value}")
    return ms
