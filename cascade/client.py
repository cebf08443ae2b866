"""A small Python client for a running cascade (``cascade serve``) and the ``cascade detect`` helper.

>>> client = CascadeClient("http://127.0.0.1:8000")               # doctest: +SKIP
>>> [v.source for v in client.detect(["Cheap meds, click now"])]   # doctest: +SKIP
['small']
>>> client.set_budget(0.1).target                                  # doctest: +SKIP
0.1

Changing the budget needs the app's control token: pass ``token=`` or set ``CASCADE_API_TOKEN``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cascade.types import Sample, Verdict

SampleLike = Sample | str | Sequence[float] | dict[str, Any]
TOKEN_ENV = "CASCADE_API_TOKEN"


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
    changes (``set_budget``).
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout_s: float = 120.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)
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
        response = self._http.post("/v1/detect", json=body)
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
        return _checked(self._http.post("/v1/explain", json=body))

    def budget(self) -> Budget:
        return Budget(**_checked(self._http.get("/v1/budget")))

    def set_budget(self, target: float) -> Budget:
        """Change the deferral-rate target of the running cascade (the hard cap stays as configured)."""
        return Budget(**_checked(self._http.put("/v1/budget", json={"target": target},
                                                headers=self._control_headers)))

    def health(self) -> dict[str, Any]:
        """Liveness: the router answers (``GET /healthz``)."""
        return _checked(self._http.get("/healthz"))

    def readiness(self) -> dict[str, Any]:
        """Each tier's state and the expert's circuit breaker (``GET /readyz``; a 503 body is returned too)."""
        response = self._http.get("/readyz")
        return response.json() if response.status_code == 503 else _checked(response)


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
    return {"features": [float(v) for v in sample]}


def _checked(response: httpx.Response) -> Any:
    if response.status_code < 400:
        return response.json()
    try:
        body = response.json()
        error, message = body.get("error", "error"), body.get("message", response.text)
    except (json.JSONDecodeError, AttributeError):
        error, message = "error", response.text
    raise CascadeError(response.status_code, error, message)
