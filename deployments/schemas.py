"""The HTTP API's request and response bodies (pydantic; FastAPI renders them at ``/docs``).

Size limits come from ``CascadeConfig.serve``, so the request models are built per app by
:func:`request_models`; everything else is fixed here.

>>> from cascade.config import ServeConfig
>>> models = request_models(ServeConfig(max_samples_per_request=2), modality="text")
>>> models.detect.model_validate({"samples": [{"text": "cheap meds"}]}).samples[0].text
'cheap meds'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from cascade.config import ServeConfig
from cascade.types import Sample, Verdict

Modality = Literal["text", "features"]
PAYLOADS: tuple[str, ...] = ("text", "features")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectSample(Sample):
    """A sample as the API takes it: a :class:`~cascade.types.Sample` with a non-blank text; its
    features are checked per request in numpy (:func:`deployments.payloads.feature_rows`)."""

    id: str | None = Field(None, max_length=256)

    @field_validator("features")
    @classmethod
    def _finite(cls, value: list[float | None] | None) -> list[float | None] | None:
        """Not checked value by value here: the service checks feature rows in numpy (width, NaN, inf)."""
        return value

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text must not be empty or only whitespace")
        return value


class DetectRequest(_Body):
    """One or many samples; ``rationale`` asks the expert to explain the verdicts it gives."""

    samples: list[DetectSample] = Field(min_length=1)
    rationale: bool = Field(False, description="ask the expert for a short rationale on the samples it answers")


class Turn(_Body):
    """One earlier message of a follow-up conversation."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class ExplainRequest(_Body):
    """A follow-up question about one sample (and, optionally, the verdict it got)."""

    sample: DetectSample
    question: str | None = Field(None, min_length=1, description="default: a short rationale for the verdict")
    verdict: Verdict | None = None
    history: list[Turn] = Field(default_factory=list, max_length=16)


class BudgetUpdate(_Body):
    """A new deferral-rate target, applied at once (the hard cap stays as configured)."""

    target: float = Field(ge=0, le=1, description="deferral rate to hold over the window")
    tenant: str | None = Field(None, max_length=64, description="the tenant whose target changes (apps with tenants)")


class DetectResponse(BaseModel):
    """One verdict per sample, in request order, and how many each tier answered."""

    verdicts: list[Verdict]
    answered_by: dict[str, int] = Field(description="samples per answering tier (small, expert or each chain tier's "
                                                   "name), and abstained when the app has tiers or any abstained")
    degraded: int = Field(ge=0, description="samples the expert should have answered but could not")


class ExplainResponse(BaseModel):
    """The expert's answer; when the expert fails, no answer, ``degraded`` and the reason."""

    answer: str | None
    history: list[Turn] = Field(default_factory=list, description="send back as `history` to ask a follow-up")
    degraded: bool = False
    error: str | None = Field(None, description="why the expert gave no answer, when degraded")
    cost: float = Field(0.0, ge=0)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float


class FeedbackItem(_Body):
    """A true label for one logged decision (its verdict's ``decision_id``)."""

    decision_id: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=256)


class FeedbackRequest(_Body):
    """True labels, arriving late and for a subset of the decisions; sending one again is harmless."""

    items: list[FeedbackItem] = Field(min_length=1)


class FeedbackOutcome(BaseModel):
    decision_id: str
    status: Literal["ok", "unknown id", "bad label", "conflict", "duplicate"] = Field(
        description="ok: attached; duplicate: this label was already attached; conflict: another label was "
                    "(kept as is); unknown id: no such decision logged (or pruned); bad label: not a served label")


class FeedbackResponse(BaseModel):
    """One outcome per item, in order, and how many of each."""

    results: list[FeedbackOutcome]
    counts: dict[str, int]


class ReviewEntry(BaseModel):
    """A sample no tier answered confidently, waiting for a person's label (send it to POST /v1/feedback)."""

    decision_id: str
    time: float = Field(description="when it was decided (Unix seconds)")
    tenant: str | None
    sample: dict[str, Any] = Field(description="the sample as it was sent: {'text': ...} or {'features': [...]}")


class ReviewResponse(BaseModel):
    """Abstained samples without a label yet, oldest first; ``pending`` counts them all."""

    items: list[ReviewEntry]
    labels: list[str] = Field(description="the labels a reviewer may give")
    pending: int


class MonitorState(BaseModel):
    """One anytime-valid monitor of the served certificate (:mod:`policies.watch`)."""

    bound: float | None = Field(description="the certified bound it tests (None: exchangeability)")
    n: int = Field(description="observations so far")
    mean: float | None = Field(description="their running mean")
    evidence: float = Field(description="the e-process now; 1 at the start, alarm at alarm_at_evidence")
    alarm_at_evidence: float = Field(description="1/δ of this monitor (δ_monitor split among the monitors)")
    alarm: bool
    alarm_at: int | None = Field(description="the observation that raised the alarm")


class WatchState(BaseModel):
    """The monitors of the served certificate and what the app does about an alarm."""

    status: Literal["watching", "alarm", "fallback", "recertifying", "recertify-failed", "unwatched"]
    message: str
    delta: float = Field(description="δ_monitor: chance of any false alarm while the certificate holds")
    action: Literal["alert", "fallback", "recertify"]
    certificate_id: str | None
    monitors: dict[str, MonitorState]
    replaced: list[dict[str, Any]] = Field(description="earlier certificates this app served, and why replaced")
    error: str | None = Field(None, description="the last failure to read the decision log, if the latest pass failed")


class GuaranteeNow(BaseModel):
    """The guarantee in force for the threshold served now (:func:`policies.online.guarantee_now`)."""

    status: Literal["certified", "defers-less", "tracking", "overridden", "uncertified", "in-doubt"]
    statement: str
    certified_threshold: float | None = Field(None, description="the threshold the certificate is about")


class BudgetState(BaseModel):
    """What the app's online controller holds now (one budget for every router replica)."""

    kind: str = Field(description="the budget the threshold was tuned for (rate, cost, accepted-error, joint)")
    target: float = Field(description="deferral rate the controller holds")
    realised_rate: float = Field(description="deferral rate over the window")
    window: int
    observed: int = Field(description="samples in the current window")
    threshold: float
    hard_cap: float | None
    cap_remaining: int | None = Field(description="deferrals the hard cap still allows now")
    capped: bool = Field(description="the hard cap binds: no deferral is allowed now")
    certificate: dict[str, Any] | None = None
    guarantee: GuaranteeNow = Field(description="which guarantee covers the current threshold")
    served_rule: Literal["certified", "track"] = Field(
        "track", description="'certified': the certified rule as it is; 'track': moved to hold the target")
    forced_in_window: int = Field(0, description="samples in the window the rule deferred but the small tier "
                                                 "answered (hard cap or missing lease allowance)")
    forced_total: int = Field(0, description="such forced acceptances since the budget started")
    replicas: int | None = Field(None, description="router replicas sharing this budget now (None: in-process)")
    tenant: str | None = Field(None, description="whose budget this is (None: an app without tenants)")
    app_cap: dict[str, Any] | None = Field(None, description="with tenants: the app-wide cap over all of them "
                                                            "(hard_cap, window, deferrals, cap_remaining)")
    resumed: bool | None = Field(None, description="the budget holder resumed its checkpoint after a restart "
                                                   "(None: in-process)")
    certificate_id: str | None = Field(None, description="the id every decision served under the certificate carries")
    watch: WatchState | None = Field(None, description="the certificate's monitors (None: not watched)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    name: str
    modality: Modality
    labels: list[str]
    expert: str
    max_samples_per_request: int


class Readiness(BaseModel):
    """``GET /readyz``: 503 while ``not_ready``; ``degraded`` still serves (expert answers fall back)."""

    status: Literal["ready", "degraded", "not_ready"]
    small: Literal["up", "down"] = Field(description="the small tier answers")
    expert: Literal["loading", "up", "down"] = Field(description="loading: never up yet; down: was up, is not now")
    breaker: Literal["closed", "open", "half-open"] = Field(description="the circuit breaker in front of the expert")
    expert_consecutive_failures: int = Field(ge=0)
    tiers: dict[str, str] | None = Field(None, description="with several tiers after the small one: each one's state "
                                                           "and breaker (the fields above are the worst of them)")


class FieldProblem(BaseModel):
    field: str
    problem: str


class ErrorResponse(BaseModel):
    """Every 4xx body: a short code, a readable message and each bad field."""

    error: str
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)


@dataclass(frozen=True)
class RequestModels:
    """The request bodies with this app's limits and modality baked in."""

    detect: type[DetectRequest]
    explain: type[ExplainRequest]
    feedback: type[FeedbackRequest]


def request_models(limits: ServeConfig, modality: Modality) -> RequestModels:
    """Request models that enforce ``limits`` (sizes) and ``modality`` (which payload is accepted)."""
    text = (str | None, Field(None, min_length=1, max_length=limits.max_text_chars))
    features = (list[float | None] | None, Field(None, min_length=1, max_length=limits.max_features))

    def _modality(self: DetectSample) -> DetectSample:
        given = next(name for name in PAYLOADS if getattr(self, name) is not None)
        if given != modality:
            raise ValueError(f"this cascade serves {modality} samples; got {given}")
        return self

    sample = create_model(
        "DetectSample", __base__=DetectSample, __doc__=DetectSample.__doc__,
        __validators__={"_modality": model_validator(mode="after")(_modality)},
        text=text, features=features,
    )
    samples = Field(min_length=1, max_length=limits.max_samples_per_request)
    detect = create_model(
        "DetectRequest", __base__=DetectRequest, __doc__=DetectRequest.__doc__,
        samples=(list[sample], samples),  # type: ignore[valid-type]
    )
    explain = create_model(
        "ExplainRequest", __base__=ExplainRequest, __doc__=ExplainRequest.__doc__,
        sample=(sample, ...),
        question=(str | None, Field(None, min_length=1, max_length=limits.max_text_chars)),
    )
    feedback = create_model(
        "FeedbackRequest", __base__=FeedbackRequest, __doc__=FeedbackRequest.__doc__,
        items=(list[FeedbackItem], Field(min_length=1, max_length=limits.feedback.max_items)),
    )
    return RequestModels(detect=detect, explain=explain, feedback=feedback)


def max_body_bytes(limits: ServeConfig) -> int:
    """The largest request body worth parsing: a full request at every limit, JSON-encoded.

    A sample carries a text (6 bytes a character at worst, ``\\uXXXX``) or features (32 bytes each).
    """
    per_sample = max(6 * limits.max_text_chars, 32 * limits.max_features) + 4096
    return limits.max_samples_per_request * per_sample + 65536
