"""How the service calls the expert: through the circuit breaker, within the timeout and the request's
deadline, with the expert's readiness checked out of band; and what ``/readyz`` says about it.

The breaker (:class:`~deployments.breaker.CircuitBreaker`) opens at the first
:class:`~cascade.experts.errors.ExpertUnavailable` or after ``breaker.failures`` failures in a row;
while it is open a call fails at once (:class:`~deployments.contracts.CircuitOpen`) and, after each
cool-down, a background check of the expert's readiness decides when a request may try it again. A
call the request's deadline leaves no time for fails at once too (:class:`DeadlineExceeded`), and is
no expert failure; the deadline travels with the call, so the expert replica drops it unstarted when
its turn comes too late (:mod:`deployments.expert_work`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any

from cascade.experts.errors import ExpertUnavailable
from deployments.breaker import CircuitBreaker
from deployments.contracts import CircuitOpen, ExpertOverloaded, ServiceSettings, TierProbe
from deployments.deadline import Deadline, DeadlineExceeded, ExpertLatency, send_deadline, unsend_deadline
from deployments.schemas import Readiness


class ExpertCalls:
    """The expert's breaker, its recent latency and its readiness, for one router replica."""

    def __init__(self, settings: ServiceSettings, probe: TierProbe | None = None,
                 breaker: CircuitBreaker | None = None) -> None:
        self.settings = settings
        self.probe = probe
        self.breaker = breaker or CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s,
                                                 probed=probe is not None)
        self.latency = ExpertLatency()
        self.seen_up = probe is None
        self._check: asyncio.Task[None] | None = None

    async def call(self, call: Awaitable[Any], deadline: Deadline | None = None) -> Any:
        """Await an expert call through the circuit breaker and the timeout (at most the time the
        request's ``deadline`` leaves: running out of that is :class:`DeadlineExceeded`, no expert
        failure); record how it went."""
        left = math.inf if deadline is None else deadline.remaining_s()
        if left <= self.latency.expected_s():
            _drop(call)
            raise DeadlineExceeded(f"{max(left, 0) * 1000:.0f} ms left; the expert takes about "
                                   f"{self.latency.expected_s() * 1000:.0f} ms")
        if not self.breaker.allow():
            _drop(call)
            if self.breaker.probe_due():
                self._check = asyncio.create_task(self._check_expert())
            raise CircuitOpen(f"the expert failed {self.breaker.consecutive_failures} times in a row; "
                              f"trying it again after {self.breaker.cooldown_s:g} s")
        timeout = min(self.settings.expert_timeout_s, left)
        sent = send_deadline(deadline)  # the expert replica drops the call if it cannot start in time
        try:
            result = await asyncio.wait_for(call, timeout)
        except DeadlineExceeded:  # dropped in the expert's queue: its requester would be gone
            raise
        except (asyncio.TimeoutError, TimeoutError):
            if timeout < self.settings.expert_timeout_s:
                self.latency.observe(timeout * 1000.0)  # it took at least this long
                raise DeadlineExceeded(f"the request's deadline passed after {timeout * 1000:.0f} ms") from None
            self.breaker.record_failure()
            raise
        except ExpertOverloaded:
            raise
        except ExpertUnavailable:
            self.breaker.trip()
            raise
        except Exception:
            self.breaker.record_failure()
            raise
        finally:
            unsend_deadline(sent)
        self.breaker.record_success()
        self.seen_up = True
        return result

    async def readiness(self, small_ready: TierProbe | None) -> Readiness:
        """Each tier's state and the breaker's: ``not_ready`` until the small tier answers and the
        expert has been up once; ``degraded`` while the expert is down or the circuit is not closed."""
        small_up, expert_up = await asyncio.gather(self.up(small_ready), self.up(self.probe))
        self.seen_up = self.seen_up or expert_up
        expert = "up" if expert_up else ("down" if self.seen_up else "loading")
        if not (small_up and self.seen_up):
            status = "not_ready"
        elif expert == "up" and self.breaker.state == "closed":
            status = "ready"
        else:
            status = "degraded"
        return Readiness(status=status, small="up" if small_up else "down", expert=expert,
                         breaker=self.breaker.state, expert_consecutive_failures=self.breaker.consecutive_failures)

    async def up(self, probe: TierProbe | None) -> bool:
        """Whether ``probe`` says its tier is up within ``serve.readiness_timeout_s`` (no probe: up)."""
        if probe is None:
            return True
        try:
            return bool(await asyncio.wait_for(probe(), self.settings.readiness_timeout_s))
        except Exception:  # a tier that cannot say it is up is down
            return False

    async def _check_expert(self) -> None:
        """The breaker's out-of-band check: half-open it when the expert says it is up."""
        if await self.up(self.probe):
            self.breaker.probe_passed()
        else:
            self.breaker.probe_failed()


def _drop(call: Awaitable[Any]) -> None:
    """Close a call's coroutine that will never be awaited (no 'never awaited' warning)."""
    close = getattr(call, "close", None)
    if close is not None:
        close()


def fallback_reason(exc: BaseException) -> str:
    """Why an expert call gave no answer, as verdicts (``degraded_reason``) and metrics name it."""
    if isinstance(exc, DeadlineExceeded):
        return "deadline"
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, ExpertOverloaded):
        return "overloaded"
    if isinstance(exc, ExpertUnavailable):
        return "unavailable"
    return "timeout" if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) else "error"


def worst_readiness(states: dict[str, Readiness]) -> Readiness:
    """One readiness for several tiers: the worst status, expert state and breaker; each tier's in ``tiers``."""
    values = list(states.values())
    status = next(s for s in ("not_ready", "degraded", "ready") if any(r.status == s for r in values))
    expert = next(s for s in ("loading", "down", "up") if any(r.expert == s for r in values))
    breaker = next(s for s in ("open", "half-open", "closed") if any(r.breaker == s for r in values))
    return Readiness(status=status, small=values[0].small, expert=expert, breaker=breaker,
                     expert_consecutive_failures=max(r.expert_consecutive_failures for r in values),
                     tiers={name: f"{r.expert}, breaker {r.breaker}" for name, r in states.items()})
