"""A circuit breaker for the expert tier: after repeated failures, stop waiting for it.

``closed``: every call goes through; ``failures`` consecutive failures (errors or timeouts) open
the circuit, and so does one failure that says the expert is gone (:meth:`CircuitBreaker.trip`:
its replica died, its server refuses connections), since waiting for more would only make more
requests wait. ``open``: calls are refused at once (the router answers with the small tier's
verdict, flagged ``degraded``) until ``cooldown_s`` has passed; then the circuit is
``half-open`` and lets one probe call through. A probe that succeeds closes the circuit; one that
fails opens it for another cool-down. A probe that never reports back (its caller was cancelled)
is replaced by another after a further ``cooldown_s``.

With ``probed=True`` no request is the first to try an expert that may still be gone: after each
cool-down :meth:`~CircuitBreaker.probe_due` asks the owner to check the expert out of band (e.g. its
readiness), and only :meth:`~CircuitBreaker.probe_passed` half-opens the circuit; a failed check
(:meth:`~CircuitBreaker.probe_failed`) keeps it open for another cool-down.

The clock is injected, so the state machine is tested without sleeping:

>>> now = [0.0]
>>> breaker = CircuitBreaker(failures=2, cooldown_s=5.0, clock=lambda: now[0])
>>> breaker.record_failure(); breaker.record_failure(); breaker.state
'open'
>>> breaker.allow()
False
>>> now[0] = 5.0
>>> breaker.allow(), breaker.state
(True, 'half-open')
>>> breaker.record_success(); breaker.state
'closed'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a timed half-open probe (see the module docstring)."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic,
                 probed: bool = False) -> None:
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures}")
        if cooldown_s <= 0:
            raise ValueError(f"cooldown_s must be positive, got {cooldown_s}")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.probed = probed
        self._clock = clock
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._since = 0.0  # when the circuit opened, or when the last probe (a call or a check) went out
        self._probe_out = False  # a half-open probe call is in flight

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def allow(self) -> bool:
        """May a call go to the expert now? In ``half-open`` only the probe may."""
        if self._state == "closed":
            return True
        waited = self._clock() - self._since >= self.cooldown_s
        if self._state == "open" and (self.probed or not waited):
            return False
        if self._state == "half-open" and self._probe_out and not waited:
            return False
        self._state = "half-open"
        self._since = self._clock()
        self._probe_out = True
        return True

    def record_success(self) -> None:
        """A call answered: close the circuit."""
        self._state = "closed"
        self._consecutive = 0
        self._probe_out = False

    def record_failure(self) -> None:
        """A call failed or timed out: open the circuit after enough in a row, or when the probe failed."""
        self._consecutive += 1
        if self._state == "half-open" or self._consecutive >= self.failures:
            self._open()

    def trip(self) -> None:
        """A call failed in a way that says the expert is gone: open the circuit now."""
        self._consecutive += 1
        self._open()

    def probe_due(self) -> bool:
        """With ``probed``: is it time to check the expert out of band? True once per cool-down while open."""
        if not (self.probed and self._state == "open" and self._clock() - self._since >= self.cooldown_s):
            return False
        self._since = self._clock()  # a check that never reports back is repeated after another cool-down
        return True

    def probe_passed(self) -> None:
        """The out-of-band check found the expert up: half-open, the next call is the probe."""
        if self._state == "open":
            self._state = "half-open"
            self._probe_out = False

    def probe_failed(self) -> None:
        """The out-of-band check found the expert still down: stay open for another cool-down."""
        if self._state == "open":
            self._since = self._clock()

    def _open(self) -> None:
        self._state = "open"
        self._since = self._clock()
        self._probe_out = False
