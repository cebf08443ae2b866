"""The cascade's HTTP API as a FastAPI app around a :class:`CascadeAPI`: the Ray Serve router
(:class:`~deployments.router.CascadeRouter`) or, in one process, a :class:`~deployments.service.CascadeService`.

Bad input never reaches the service: malformed JSON and an empty body are 400, a body that is not
JSON is 415, anything over a size limit is 413 (chunked bodies too), every other validation failure
(feature rows of the wrong width or with NaN / inf too, checked per request in numpy) is 422; each body names the fields at fault (:class:`~deployments.schemas.ErrorResponse`). A change
to the running app (``PUT /v1/budget``) without the control token is 401, or 403 when no token is
configured (:mod:`deployments.guard`). An expert failure is never an error (the small tier's verdict
comes back, flagged ``degraded``); only a failed small tier is a 503, with ``Retry-After``. Every
error the app answers has the JSON :class:`~deployments.schemas.ErrorResponse` body, a bug's 500
too (``internal_error``): a 5xx without it came from Ray Serve's proxy, e.g. the plain-text 500 when
the router replica died with the request, which clients retry (:func:`cascade.client.retry_delay`).
``/healthz`` is liveness (the router answers); ``/readyz`` reports each tier and the expert's
circuit breaker, 503 while not ready. ``X-Cascade-Tier`` says which tier answered (``small``,
``expert``, a chain tier's name, ``abstained`` or ``mixed``), ``X-Cascade-Degraded`` how many samples
fell back to an earlier tier.

The app is plain FastAPI, so it runs in Ray Serve (the router) and under a test client alike::

    app = build_http_app(service, config.serve, ControlAccess.from_config(config.serve.control))   # doctest: +SKIP
"""

# No `from __future__ import annotations`: FastAPI must see the per-app request models, which
# are local to build_http_app, as real annotation objects.

import math
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cascade import __version__
from cascade.config import ServeConfig
from cascade.decision_log import DecisionLogError
from cascade.types import Sample
from deployments.payloads import InvalidSamples
from deployments.budgets import BudgetUnavailable
from deployments.control import ControlAccess, TenantAccess
from deployments.deadline import DEADLINE_HEADER, parse_deadline_header
from deployments.decisions import FeedbackDisabled
from deployments.tracing import extract
from deployments.guard import RequestGuard
from deployments.schemas import (
    BudgetState,
    BudgetUpdate,
    DetectResponse,
    ErrorResponse,
    ExplainRequest,
    ExplainResponse,
    FeedbackRequest,
    FeedbackResponse,
    FieldProblem,
    Health,
    ReviewResponse,
    Modality,
    Readiness,
    max_body_bytes,
    request_models,
)
from deployments.contracts import InvalidBudget, SmallTierUnavailable
from deployments.metrics import CascadeMetrics
from policies.tenants import UnknownTenant

ROUTES: tuple[str, ...] = ("/v1/detect", "/v1/explain", "/v1/budget", "/v1/feedback", "/v1/review", "/healthz",
                           "/readyz")
TIER_HEADER = "X-Cascade-Tier"
DEGRADED_HEADER = "X-Cascade-Degraded"
_SIZE_ERRORS = {"too_long", "string_too_long"}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in ((400, "malformed JSON or empty body"), (413, "over a size limit"),
                       (415, "body is not JSON"), (422, "invalid fields"))
}
_CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES, 401: {"model": ErrorResponse, "description": "missing or wrong bearer token"},
    403: {"model": ErrorResponse, "description": "no control token configured: changes are disabled"}}


class CascadeAPI(Protocol):
    """What the routes call: the router, or the service in one process."""

    modality: Modality
    metrics: CascadeMetrics
    tracer: Any

    async def detect(self, samples: Sequence[Sample], rationale: bool = False, deadline_ms: float | None = None,
                     trace_context: Any = None, tenant: str | None = None) -> DetectResponse: ...

    async def explain(self, request: ExplainRequest) -> ExplainResponse: ...

    async def budget(self, tenant: str | None = None) -> BudgetState: ...

    async def set_budget(self, update: BudgetUpdate) -> BudgetState: ...

    async def feedback(self, request: FeedbackRequest) -> FeedbackResponse: ...

    async def review(self, limit: int, tenant: str | None, after: float | None) -> ReviewResponse: ...

    def health(self) -> Health: ...

    async def readiness(self) -> Readiness: ...


def build_http_app(service: CascadeAPI, limits: ServeConfig, access: ControlAccess,
                   feedback_access: ControlAccess | None = None, tenants: TenantAccess | None = None) -> FastAPI:
    """The FastAPI app: ``/v1/detect``, ``/v1/explain``, ``/v1/budget``, ``/v1/feedback``, ``/healthz``,
    ``/readyz``, ``/docs``; ``access`` says who may ``PUT /v1/budget``, ``feedback_access`` who may
    ``POST /v1/feedback`` (default: ``limits.feedback``'s token), ``tenants`` which token is which tenant."""
    if feedback_access is None:
        feedback_access = ControlAccess.from_config(limits.feedback, "feedback")
    models = request_models(limits, service.modality)
    retry_after = {"Retry-After": str(math.ceil(limits.retry_after_s))}
    app = FastAPI(
        title="cascade",
        version=__version__,
        description="A cheap detector answers; a calibrated deferral policy sends likely-wrong samples to an LLM.",
    )
    app.add_middleware(RequestGuard, body_limit=max_body_bytes(limits), access=access, metrics=service.metrics,
                       routes=ROUTES, feedback_access=feedback_access, tenants=tenants)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(request, exc)

    @app.exception_handler(InvalidBudget)
    async def _invalid_budget(request: Request, exc: InvalidBudget) -> JSONResponse:
        return _error(422, "invalid_request", f"target: {exc}", [FieldProblem(field="target", problem=str(exc))])

    @app.exception_handler(InvalidSamples)
    async def _invalid_samples(request: Request, exc: InvalidSamples) -> JSONResponse:
        problems = [FieldProblem(field=field, problem=problem) for field, problem in exc.problems]
        return _error(422, "invalid_request", _summary(problems), problems)

    @app.exception_handler(SmallTierUnavailable)
    async def _small_down(request: Request, exc: SmallTierUnavailable) -> JSONResponse:
        return _error(503, "small_tier_unavailable", str(exc), headers=retry_after)

    @app.exception_handler(BudgetUnavailable)
    async def _budget_away(request: Request, exc: BudgetUnavailable) -> JSONResponse:
        return _error(503, "budget_unavailable", str(exc), headers=retry_after)

    @app.exception_handler(FeedbackDisabled)
    async def _no_log(request: Request, exc: FeedbackDisabled) -> JSONResponse:
        return _error(409, "decision_log_disabled", str(exc))

    @app.exception_handler(DecisionLogError)
    async def _log_down(request: Request, exc: DecisionLogError) -> JSONResponse:
        return _error(503, "decision_log_unavailable", str(exc), headers=retry_after)

    @app.exception_handler(UnknownTenant)
    async def _no_tenant(request: Request, exc: UnknownTenant) -> JSONResponse:
        return _error(404, "not_found", str(exc).strip('"'))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_error", f"{request.method} {request.url.path}: unexpected {type(exc).__name__} "
                      "(the router's log has the details)")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}",
                      headers=exc.headers)

    @app.post("/v1/detect", response_model=DetectResponse, responses=_ERROR_RESPONSES)
    async def detect(body: models.detect, request: Request) -> Response:  # type: ignore[valid-type]
        """Verdicts for one or many samples; the expert is awaited only for deferred ones, and only while
        the request's deadline (``X-Cascade-Deadline-Ms``, else ``serve.deadline_ms``) leaves time."""
        try:
            deadline_ms = parse_deadline_header(request.headers.get(DEADLINE_HEADER))
        except ValueError as exc:
            return _error(422, "invalid_request", str(exc), [FieldProblem(field=DEADLINE_HEADER, problem=str(exc))])
        context = extract(request.headers) if service.tracer is not None else None  # the client's traceparent
        result = await service.detect(body.samples, rationale=body.rationale, deadline_ms=deadline_ms,
                                      trace_context=context, tenant=_tenant(request))
        tiers = [tier for tier, count in result.answered_by.items() if count]
        headers = {TIER_HEADER: tiers[0] if len(tiers) == 1 else "mixed", DEGRADED_HEADER: str(result.degraded)}
        # serialised as built: the service made every value, FastAPI need not validate them again
        return Response(result.model_dump_json(), media_type="application/json", headers=headers)

    @app.post("/v1/explain", response_model=ExplainResponse, responses=_ERROR_RESPONSES)
    async def explain(body: models.explain, response: Response) -> ExplainResponse:  # type: ignore[valid-type]
        """The expert's answer to a follow-up question about a sample and its verdict."""
        result = await service.explain(body)
        response.headers[TIER_HEADER] = "expert"
        response.headers[DEGRADED_HEADER] = str(int(result.degraded))
        return result

    @app.get("/v1/budget", response_model=BudgetState, responses={404: {"model": ErrorResponse,
                                                                       "description": "no such tenant"}})
    async def budget(request: Request) -> BudgetState:
        """Target, realised deferral rate over the window, and whether the hard cap binds: the caller's
        tenant's budget, or (with the control token) ``?tenant=``'s."""
        return await service.budget(_tenant(request) or request.query_params.get("tenant"))

    @app.put("/v1/budget", response_model=BudgetState, responses=_CONTROL_RESPONSES)
    async def set_budget(body: BudgetUpdate) -> BudgetState:
        """Change the deferral-rate target at run time (for the whole app); needs ``Authorization: Bearer``."""
        return await service.set_budget(body)

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses={
        **_CONTROL_RESPONSES, 409: {"model": ErrorResponse, "description": "the app keeps no decision log"}})
    async def feedback(body: models.feedback) -> FeedbackResponse:  # type: ignore[valid-type]
        """Attach true labels to logged decisions (late, for any subset; idempotent); needs the feedback
        token (``Authorization: Bearer``). One outcome per item: ok, duplicate, conflict, unknown id, bad label."""
        return await service.feedback(body)

    @app.get("/v1/review", response_model=ReviewResponse, responses={
        **_CONTROL_RESPONSES, 409: {"model": ErrorResponse, "description": "the app keeps no decision log"}})
    async def review(limit: int = Query(50, ge=1, le=1000), tenant: str | None = Query(None, max_length=64),
                     after: float | None = Query(None)) -> ReviewResponse:
        """Abstained samples waiting for a label, oldest first (the feedback token: reviewers send the
        labels back through ``POST /v1/feedback`` with each item's ``decision_id``)."""
        return await service.review(limit, tenant, after)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: 200 while the router answers; names the served labels and the expert."""
        return service.health()

    @app.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
             responses={503: {"model": Readiness, "description": "not ready"}})
    async def readyz(response: Response) -> Readiness:
        """Readiness: each tier (small up/down; expert loading/up/down) and the breaker; 503 while not ready."""
        readiness = await service.readiness()
        if readiness.status == "not_ready":
            response.status_code = 503
            response.headers.update(retry_after)
        return readiness

    return app


def _tenant(request: Request) -> str | None:
    """The tenant the guard found for the request's token (``None``: the app has no tenants)."""
    return getattr(request.state, "tenant", None)


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    problems = [FieldProblem(field=_field(err["loc"]), problem=err["msg"]) for err in errors]
    content_type = request.headers.get("content-type", "")
    if not any(err["loc"] and err["loc"][0] == "body" for err in errors):  # a query or header field
        return _error(422, "invalid_request", _summary(problems), problems)
    if "json" not in content_type.lower():
        return _error(415, "unsupported_media_type",
                      f"send the body as application/json (got content-type '{content_type or 'none'}')")
    if any(err["type"] == "json_invalid" for err in errors):
        where = next(err for err in errors if err["type"] == "json_invalid")
        detail = where.get("ctx", {}).get("error", "JSON decode error")
        return _error(400, "malformed_json", f"body is not valid JSON: {detail} (at character {where['loc'][-1]})")
    if any(err["type"] == "missing" and tuple(err["loc"]) == ("body",) for err in errors):
        return _error(400, "empty_body", "the request needs a JSON object body")
    if any(err["type"] in _SIZE_ERRORS for err in errors):
        sized = [p for p, err in zip(problems, errors) if err["type"] in _SIZE_ERRORS]
        return _error(413, "payload_too_large", _summary(sized), sized)
    return _error(422, "invalid_request", _summary(problems), problems)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "<body>"


def _summary(problems: list[FieldProblem]) -> str:
    return "; ".join(f"{p.field}: {p.problem}" for p in problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else "")


def _error(status: int, code: str, message: str, problems: list[FieldProblem] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=code, message=message, fields=problems or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)
