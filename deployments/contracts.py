"""What the router's service is built from, free of Ray and HTTP: the tiers' and the budget's
interfaces, the service settings, and the errors the HTTP layer turns into status codes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cascade.config import CascadeConfig
from cascade.detectors import detector_class
from deployments.answers import SmallScores
from deployments.payloads import Payload
from deployments.served import ServedPolicy
from deployments.schemas import Modality
from policies.online import Decisions
from policies.watch import certificate_id

TierProbe = Callable[[], Awaitable[bool]]
"""Answers whether a tier can serve now (False or an exception: it cannot)."""


class ExpertTier(Protocol):
    """The part of an expert the router needs (an expert object, or a handle to the deployment)."""

    async def ajudge(self, X: Payload) -> Any: ...

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Any: ...


class SmallTierClient(Protocol):
    """The small tier as the service asks it (:mod:`deployments.detector`): scores and readiness."""

    async def score(self, payload: Payload) -> SmallScores: ...

    async def ready(self) -> bool: ...


class Budget(Protocol):
    """The deferral budget (:mod:`deployments.budgets`): decides per batch, reads and changes the target."""

    hard_cap: float | None
    threshold: float

    def triage(self, scores: np.ndarray, samples: Payload | None = None) -> Decisions: ...

    def state(self) -> dict[str, Any]: ...

    async def current(self) -> dict[str, Any]: ...

    async def set_target(self, target: float) -> None: ...


@dataclass(frozen=True)
class ServiceSettings:
    """What the service needs to know besides the tiers."""

    name: str
    label_names: tuple[str, ...]
    modality: Modality
    expert_name: str
    expert_timeout_s: float
    max_samples_per_request: int
    deadline_ms: float | None = None
    budget_kind: str = "rate"
    served_rule: str = "track"
    certificate: dict[str, Any] | None = None
    breaker_failures: int = 3
    breaker_cooldown_s: float = 5.0
    readiness_timeout_s: float = 2.0
    n_features: int | None = None
    missing_values: bool = False
    """the detector takes missing feature values (NaN; ``null`` in JSON)"""
    certificate_id: str | None = None
    """the served certificate's id (:func:`policies.watch.certificate_id`) until the holder says otherwise"""

    @classmethod
    def from_config(cls, config: CascadeConfig, served: ServedPolicy) -> "ServiceSettings":
        serve = config.serve
        return cls(name=config.name, label_names=served.label_names, modality=served.modality,
                   expert_name=config.expert.display_name,
                   expert_timeout_s=serve.expert_timeout_s, max_samples_per_request=serve.max_samples_per_request,
                   deadline_ms=serve.deadline_ms,
                   budget_kind=config.budget.kind, served_rule=str(config.budget.served_rule),
                   certificate=served.certificate,
                   breaker_failures=serve.breaker.failures, breaker_cooldown_s=serve.breaker.cooldown_s,
                   readiness_timeout_s=serve.readiness_timeout_s, n_features=served.n_features,
                   missing_values=detector_class(config.detector.kind).missing_values is not None,
                   certificate_id=certificate_id(served.certificate))


class InvalidBudget(ValueError):
    """A budget update the controller cannot take (e.g. a target above the hard cap)."""


class SmallTierUnavailable(RuntimeError):
    """The detector failed: the request has no verdict to fall back on (503)."""


class ExpertOverloaded(RuntimeError):
    """The expert's queue is full: the deferred samples keep the small verdict (not a breaker failure)."""


class CircuitOpen(RuntimeError):
    """The breaker refused the call: the expert has been failing."""
