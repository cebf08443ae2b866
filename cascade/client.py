"""A small Python client for a running cascade (``cascade serve``) and the ``cascade detect`` helper.

>>> client = CascadeClient("http://127.0.0.1:8000")               # doctest: +SKIP
>>> [v.source for v in client.detect(["Cheap meds, click now"])]   # doctest: +SKIP
['small']
>>> client.set_budget(0.1).target                                  # doctest: +SKIP
0.1

Changing the budget needs the app's control token: pass ``token=`` or set ``CASCADE_API_TOKEN``.

Retries (``retries``, default 3): a request is sent again when the app could not answer it, never
when it refused it. :func:`retry_delay` decides: a 503 with ``Retry-After`` (a full queue, the small
tier or the budget holder away) waits that long; a 5xx that is not the app's own JSON error (Ray
Serve's proxy answers a plain-text ``500 Internal Server Error`` when the router replica holding
the request died before answering, and nothing in the app can change that status: the app died
with the request) and a dropped connection wait ``retry_backoff_s``, by then Serve routes to a
surviving replica. Sending a detect request twice is safe for its verdict; the budget may count
the sample once more (a dead replica's unreported decisions are never counted, so usually it is
counted once) and the expert may be asked twice for a deferred one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cascade.types import Sample, Verdict

SampleLike = Sample | str | Sequence[float] | dict[str, Any]
TOKEN_ENV = "CASCADE_API_TOKEN"
MAX_RETRY_WAIT_S = 30.0


def retry_delay(response: httpx.Response, backoff_s: float = 0.5) -> float | None:
    """Seconds to wait before sending a request again, or ``None`` when its answer is final.

    A 503 with ``Retry-After`` waits that long (at most ``MAX_RETRY_WAIT_S``); a 5xx without the
    app's JSON error body came from Serve's proxy, not the app (its router replica died with the
    request), and waits ``backoff_s``. Any other answer, the app's own 5xx included, is final.

    >>> retry_delay(httpx.Response(503, headers={"Retry-After": "2"}))
    2.0
    >>> retry_delay(httpx.Response(500, text="Internal Server Error"))
    0.5
    >>> retry_delay(httpx.Response(500, json={"error": "internal_error", "message": "bug"})) is None
    True
    """
    status = response.status_code
    if status == 503 and "retry-after" in response.headers:
        try:
            return min(max(float(response.headers["retry-after"]), 0.0), MAX_RETRY_WAIT_S)
        except ValueError:
            return backoff_s
    if status >= 500 and not _is_app_error(response):
        return backoff_s
    return None


class CascadeError(RuntimeError):
    """The server refused a request (4xx) or failed (5xx); carries its status and message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


class Budget(BaseModel):
    """The server's budget state (``GET /v1/budget``)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    target: float
    hard_cap: float | None
    window: int
    observed: int
    realised_rate: float
    capped: bool
    threshold: float
    certificate: dict[str, Any] | None = None


class Detection(BaseModel):
    """The answer to one ``POST /v1/detect``: verdicts in request order and the answering tier."""

    verdicts: list[Verdict]
    answered_by: dict[str, int] = Field(default_factory=dict)
    degraded: int = 0
    tier: str = Field("", description="the X-Cascade-Tier header: small, expert or mixed")


class CascadeClient:
    """Synchronous client; use it as a context manager or call :meth:`close`.

    ``token`` (default: the ``CASCADE_API_TOKEN`` environment variable) is sent as a bearer token with
    changes (``set_budget``). A request the app could not answer is sent again up to ``retries``
    times (see the module docstring and :func:`retry_delay`); ``transport`` is httpx's, for tests.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout_s: float = 120.0, token: str | None = None,
                 retries: int = 3, retry_backoff_s: float = 0.5, transport: httpx.BaseTransport | None = None) -> None:
        if retries < 0 or retry_backoff_s < 0:
            raise ValueError(f"retries and retry_backoff_s must be >= 0, got {retries} and {retry_backoff_s}")
        self.url = url.rstrip("/")
        self.retries, self.retry_backoff_s = retries, retry_backoff_s
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._control_headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __enter__(self) -> "CascadeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def detect(self, samples: SampleLike | Iterable[SampleLike], rationale: bool = False) -> list[Verdict]:
        """Verdicts for one sample or many (texts, feature vectors, dicts or :class:`Sample`)."""
        return self.detect_full(samples, rationale=rationale).verdicts

    def detect_full(self, samples: SampleLike | Iterable[SampleLike], rationale: bool = False) -> Detection:
        """Like :meth:`detect`, with the per-tier counts and the answering-tier header."""
        body = {"samples": [_sample_json(s) for s in _as_list(samples)], "rationale": rationale}
        response = self._send("POST", "/v1/detect", json=body)
        payload = _checked(response)
        return Detection(**payload, tier=response.headers.get("x-cascade-tier", ""))

    def explain(self, sample: SampleLike, question: str | None = None, verdict: Verdict | None = None,
                history: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """The expert's answer to a follow-up question about ``sample`` (and its ``verdict``)."""
        body: dict[str, Any] = {"sample": _sample_json(sample), "history": history or []}
        if question is not None:
            body["question"] = question
        if verdict is not None:
            body["verdict"] = verdict.model_dump(mode="json")
        return _checked(self._send("POST", "/v1/explain", json=body))

    def budget(self) -> Budget:
        return Budget(**_checked(self._send("GET", "/v1/budget")))

    def set_budget(self, target: float) -> Budget:
        """Change the deferral-rate target of the running cascade (the hard cap stays as configured)."""
        return Budget(**_checked(self._send("PUT", "/v1/budget", json={"target": target},  # idempotent
                                            headers=self._control_headers)))

    def health(self) -> dict[str, Any]:
        """Liveness: the router answers (``GET /healthz``)."""
        return _checked(self._send("GET", "/healthz"))

    def readiness(self) -> dict[str, Any]:
        """Each tier's state and the expert's circuit breaker (``GET /readyz``; a 503 body is returned too)."""
        response = self._http.get("/readyz")  # not retried: a 503 here is the answer
        return response.json() if response.status_code == 503 else _checked(response)

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One request, sent again while the app could not answer it (:func:`retry_delay`, a dropped connection)."""
        for _ in range(self.retries):
            try:
                response = self._http.request(method, path, **options)
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                time.sleep(self.retry_backoff_s)
                continue
            delay = retry_delay(response, self.retry_backoff_s)
            if delay is None:
                return response
            time.sleep(delay)
        return self._http.request(method, path, **options)  # the last try: its answer or its error is final


def detect_cli(url: str, texts: Sequence[str] = (), file: str | Path | None = None, rationale: bool = False,
               out: TextIO | None = None) -> list[Verdict]:
    """What ``cascade detect`` does: send texts (arguments, or a file of one per line, ``-`` for stdin)
    and print one JSON verdict per line.
    """
    import sys

    items = list(texts)
    if file is not None:
        handle = sys.stdin if str(file) == "-" else open(file, encoding="utf-8")
        with handle:
            items += [line.rstrip("\n") for line in handle if line.strip()]
    if not items:
        raise ValueError("nothing to detect: give texts or --file")
    sink = out or sys.stdout
    with CascadeClient(url) as client:
        limit = int(client.health().get("max_samples_per_request", len(items)))
        verdicts: list[Verdict] = []
        for start in range(0, len(items), limit):
            verdicts += client.detect(items[start:start + limit], rationale=rationale)
    for verdict in verdicts:
        sink.write(json.dumps(verdict.model_dump(mode="json", exclude_none=True)) + "\n")
    return verdicts


def _as_list(samples: SampleLike | Iterable[SampleLike]) -> list[SampleLike]:
    if isinstance(samples, (str, dict, Sample)):
        return [samples]
    items = list(samples)  # type: ignore[arg-type]
    if items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return [items]
    return items


def _sample_json(sample: SampleLike) -> dict[str, Any]:
    if isinstance(sample, Sample):
        return sample.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    if isinstance(sample, str):
        return {"text": sample}
    if isinstance(sample, dict):
        return dict(sample)
    return {"features": [None if v is None or math.isnan(float(v)) else float(v) for v in sample]}  # null: missing


def _is_app_error(response: httpx.Response) -> bool:
    """The app's own error answer: a JSON object with an ``error`` code (``ErrorResponse``)."""
    if "json" not in response.headers.get("content-type", ""):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body


def _checked(response: httpx.Response) -> Any:
    if response.status_code < 400:
        return response.json()
    try:
        body = response.json()
        error, message = body.get("error", "error"), body.get("message", response.text)
    except (json.JSONDecodeError, AttributeError):
        error, message = "error", response.text
    raise CascadeError(response.status_code, error, message)
