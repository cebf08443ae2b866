"""The data that crosses every boundary: samples in, verdicts out, and what a call costs.

>>> s = Sample(id="m1", text="Cheap meds, click now")
>>> CostModel(expert_per_call=1.0).expert_cost(prompt_tokens=100, completion_tokens=1)
1.0
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Tier = Literal["small", "expert"]
Source = Literal["small", "expert", "abstained"]
"""who answered: the small tier, a tier after it (``Verdict.tier`` names which), or nobody (review)"""


class Sample(BaseModel):
    """One input: a text or a feature vector (images are not served)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    text: str | None = None
    features: list[float | None] | None = Field(None, description="numbers; null marks a missing value")

    @field_validator("features")
    @classmethod
    def _finite(cls, value: list[float | None] | None) -> list[float | None] | None:
        """Missing values are ``None`` (JSON ``null``); whether the detector takes them is the server's call."""
        if value is not None and not all(v is None or math.isfinite(v) for v in value):
            raise ValueError("features must be finite numbers or null (missing); no NaN or inf")
        return value

    @model_validator(mode="after")
    def _one_payload(self) -> "Sample":
        given = [name for name in ("text", "features") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a sample carries exactly one of text, features; got {given or 'none'}")
        return self


class CostModel(BaseModel):
    """Cost units per call and per 1k tokens for each tier.

    The unit is whatever the user budgets in (dollars, GPU-seconds); a budget such as
    "at most 0.40 per 1k requests" is read in the same unit.
    """

    model_config = ConfigDict(extra="forbid")

    small_per_call: float = Field(0.0, ge=0)
    expert_per_call: float = Field(1.0, ge=0)
    expert_per_1k_prompt_tokens: float = Field(0.0, ge=0)
    expert_per_1k_completion_tokens: float = Field(0.0, ge=0)

    def expert_cost(self, prompt_tokens: Any = 0, completion_tokens: Any = 0) -> Any:
        """Cost of expert calls; works on scalars and on numpy arrays of token counts."""
        prompt = np.asarray(prompt_tokens, dtype=float)
        completion = np.asarray(completion_tokens, dtype=float)
        cost = (
            self.expert_per_call
            + self.expert_per_1k_prompt_tokens * prompt / 1000.0
            + self.expert_per_1k_completion_tokens * completion / 1000.0
        )
        return float(cost) if cost.ndim == 0 else cost

    def max_expert_cost(self, max_tokens: int) -> float:
        """The most one expert call can cost when prompt and answer together hold at most ``max_tokens``.

        >>> CostModel(expert_per_call=0.1, expert_per_1k_prompt_tokens=0.5, expert_per_1k_completion_tokens=2.0).max_expert_cost(1000)
        2.1
        """
        dearest = max(self.expert_per_1k_prompt_tokens, self.expert_per_1k_completion_tokens)
        return self.expert_per_call + dearest * max_tokens / 1000.0


class Verdict(BaseModel):
    """The answer for one sample and how it was reached."""

    id: str | None = None
    decision_id: str | None = Field(None, description="this decision's id in the decision log: send it with the true "
                                                      "label to POST /v1/feedback (None: no decision log)")
    label: str | None = Field(description="the answer; None only when abstained (sent to review)")
    probability: float = Field(ge=0, le=1, description="calibrated probability of `label` (abstained: of the label "
                                                       "the last tier leaned to, not served)")
    source: Source = Field(description="small, expert (any tier after the small one) or abstained")
    tier: str | None = Field(None, description="the tier that answered: small, expert, or a chain tier's name "
                                               "(None when abstained)")
    deferral_score: float
    threshold: float
    cost: float = Field(ge=0)
    latency_ms: dict[str, float] = Field(default_factory=dict)
    degraded: bool = Field(False, description="the rule deferred this sample but the small tier answered it (the "
                                              "expert failed or timed out, or the sample was forced)")
    degraded_reason: str | None = Field(None, description="why a degraded answer came from the small tier: forced, "
                                                          "deadline, timeout, circuit_open, overloaded, unavailable "
                                                          "or error")
    forced: bool = Field(False, description="the rule deferred this sample; the hard cap or a router replica "
                                            "without lease allowance made the small tier answer it")
    certified: bool = Field(False, description="the served certificate covers this answer (see GET /v1/budget)")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    rationale: str | None = None
