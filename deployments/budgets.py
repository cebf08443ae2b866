"""The budget a :class:`~deployments.service.CascadeService` decides with, free of Ray.

* :class:`LocalBudget`: an :class:`~policies.online.OnlineController` in this process (the
  in-process app, one router);
* :class:`SharedBudget`: a router replica's share of the app's budget: decisions come from a
  :class:`~policies.leases.LeasedBudget`, reads and target changes go to the one holder
  (:mod:`deployments.holder`) through the callables it is given.

Both answer the same calls: ``triage`` (per batch, never awaits), ``state`` (the latest view, for
metrics), ``current`` and ``set_target`` (the app's budget now; awaited only by ``/v1/budget``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from deployments.payloads import Payload
from policies.leases import LeasedBudget
from policies.online import Decisions, OnlineController


class BudgetUnavailable(RuntimeError):
    """The budget's holder did not answer (503, retry)."""


class LocalBudget:
    """One controller, in this process."""

    def __init__(self, controller: OnlineController) -> None:
        self.controller = controller
        self.hard_cap = controller.hard_cap

    @property
    def threshold(self) -> float:
        return self.controller.threshold

    def triage(self, scores: np.ndarray, samples: Payload | None = None) -> Decisions:
        return self.controller.triage(scores, samples)

    def state(self) -> dict[str, Any]:
        return self.controller.state()

    async def current(self) -> dict[str, Any]:
        return self.controller.state()

    async def set_target(self, target: float) -> None:
        """Raises ``ValueError`` for a target the controller refuses."""
        self.controller.set_target(target)


class SharedBudget:
    """A router replica's share of the app's budget (see the module docstring)."""

    def __init__(self, leased: LeasedBudget, read: Callable[[], Awaitable[dict[str, Any]]],
                 change: Callable[[float], Awaitable[dict[str, Any]]]) -> None:
        self.leased = leased
        self.hard_cap = leased.hard_cap
        self._read = read
        self._change = change

    @property
    def threshold(self) -> float:
        return self.leased.threshold

    def triage(self, scores: np.ndarray, samples: Payload | None = None) -> Decisions:
        return self.leased.triage(scores, samples)

    def state(self) -> dict[str, Any]:
        return self.leased.state()

    async def current(self) -> dict[str, Any]:
        try:
            return await self._read()
        except Exception as exc:
            raise BudgetUnavailable(f"the budget holder did not answer: {_first_line(exc)}") from exc

    async def set_target(self, target: float) -> None:
        """Raises ``ValueError`` for a target the holder refuses, :class:`BudgetUnavailable` if it is away."""
        try:
            outcome = await self._change(target)
        except Exception as exc:
            raise BudgetUnavailable(f"the budget holder did not answer: {_first_line(exc)}") from exc
        if "error" in outcome:
            raise ValueError(outcome["error"])


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
