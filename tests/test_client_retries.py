"""``CascadeClient`` sends a request again when the app could not answer it, never when it refused
it: against the real router app over HTTP (``test_client.url``), with the first answers replaced by
what Ray Serve's proxy sends when the router replica holding a request dies (a plain-text 500) or
when a queue is full (503 with ``Retry-After``)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cascade.client import CascadeClient, CascadeError, retry_delay
from cascade.config import CascadeConfig
from deployments.contracts import ServiceSettings
from deployments.control import ControlAccess
from deployments.http import build_http_app
from deployments.service import CascadeService
from serving import CONTROL_TOKEN, KeptDeferred, Tiers
from test_client import url  # noqa: F401  (the fixture: the app on a loopback port)

REPLICA_DIED = httpx.Response(500, text="Internal Server Error",  # uvicorn's answer when Serve's proxy has none
                              headers={"content-type": "text/plain; charset=utf-8", "connection": "close"})
QUEUE_FULL = httpx.Response(503, text="Request dropped due to backpressure", headers={"Retry-After": "0"})


class FailingFirst(httpx.BaseTransport):
    """Answers the first requests with ``failures`` (in turn), then passes every request to the app."""

    def __init__(self, *failures: httpx.Response | type[Exception]) -> None:
        self._failures = list(failures)
        self._app = httpx.HTTPTransport()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        if self._failures:
            failure = self._failures.pop(0)
            if isinstance(failure, type):
                raise failure("connection dropped", request=request)  # type: ignore[call-arg]
            return httpx.Response(failure.status_code, headers=failure.headers, content=failure.content)
        return self._app.handle_request(request)


def retrying(url: str, transport: FailingFirst, retries: int = 3) -> CascadeClient:
    return CascadeClient(url, token=CONTROL_TOKEN, retries=retries, retry_backoff_s=0.0, transport=transport)


def test_a_request_lost_with_its_router_replica_is_sent_again_and_answered(
        url: str, kept_and_deferred: KeptDeferred) -> None:  # noqa: F811
    transport = FailingFirst(REPLICA_DIED)
    with retrying(url, transport) as cascade:
        verdicts = cascade.detect(kept_and_deferred[1][:2])
    assert len(verdicts) == 2 and transport.sent == ["POST /v1/detect"] * 2


def test_a_full_queue_and_a_dropped_connection_are_retried_too(url: str) -> None:  # noqa: F811
    transport = FailingFirst(QUEUE_FULL, httpx.RemoteProtocolError, httpx.ConnectError)
    with retrying(url, transport) as cascade:
        assert cascade.set_budget(0.3).target == 0.3
    assert transport.sent == ["PUT /v1/budget"] * 4


def test_the_apps_own_refusal_is_final(url: str) -> None:  # noqa: F811
    transport = FailingFirst()
    with retrying(url, transport) as cascade, pytest.raises(CascadeError, match="HTTP 422"):
        cascade.detect("   ")
    assert transport.sent == ["POST /v1/detect"]


def test_after_the_last_retry_the_failure_is_raised(url: str) -> None:  # noqa: F811
    transport = FailingFirst(REPLICA_DIED, REPLICA_DIED, REPLICA_DIED)
    with retrying(url, transport, retries=2) as cascade, pytest.raises(CascadeError, match="HTTP 500") as caught:
        cascade.detect("Lunch at noon?")
    assert caught.value.status == 500 and len(transport.sent) == 3


class NoSmallTier:
    async def score(self, payload: Any) -> Any:
        raise AssertionError("no detect request in this test")

    async def ready(self) -> bool:
        return True


class BrokenBudget:
    """A budget whose state cannot be read: the app has a bug on ``GET /v1/budget``."""

    hard_cap = None
    threshold = 0.5

    async def current(self) -> dict[str, Any]:
        raise KeyError("realised_rate")


def test_the_apps_own_500_is_json_so_clients_do_not_retry_it(config: CascadeConfig, knn_expert: Any,
                                                            tiers: Tiers) -> None:
    served, _ = tiers
    service = CascadeService(ServiceSettings.from_config(config, served), small=NoSmallTier(), expert=knn_expert,
                             policy=served.policy, controller=BrokenBudget(), cost=config.cost)
    app = build_http_app(service, config.serve, ControlAccess.from_token(CONTROL_TOKEN))
    api = TestClient(app, raise_server_exceptions=False)
    response = api.get("/v1/budget")
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    assert retry_delay(httpx.Response(500, headers=response.headers, content=response.content)) is None
    assert "realised_rate" not in response.text  # the details stay in the router's log
