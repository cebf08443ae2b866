"""The HTTP app's outer guard, as plain ASGI: body size, control-plane token, request metrics.

* A body over the limit is refused with 413 before it is parsed: at once when ``Content-Length``
  says so, or, for a chunked body, as soon as the bytes streamed in pass the limit (the body is
  held only up to the limit, then handed to the app).
* A mutating route (``MUTATIONS``) needs the control token (:mod:`deployments.control`), and
  ``POST /v1/feedback`` and ``GET /v1/review`` the feedback token: 401/403 before the body is read.
* With tenants (``serve.tenants``), detect and explain need a tenant's token (401 otherwise), which
  picks the tenant (``scope["state"]["tenant"]``); ``GET /v1/budget`` takes a tenant's token (its
  own budget) or the control token (any tenant's, by ``?tenant=``).
* Every answered request is counted by route and status, 4xx also as rejected input.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from deployments.control import ControlAccess, TenantAccess
from deployments.metrics import CascadeMetrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MUTATIONS: frozenset[tuple[str, str]] = frozenset({("PUT", "/v1/budget")})
FEEDBACK: frozenset[tuple[str, str]] = frozenset({("POST", "/v1/feedback"), ("GET", "/v1/review")})
TENANT_ROUTES: frozenset[tuple[str, str]] = frozenset({("POST", "/v1/detect"), ("POST", "/v1/explain"),
                                                       ("GET", "/v1/budget")})


class BodyTooLarge(Exception):
    """The streamed body passed the limit."""


class RequestGuard:
    """ASGI middleware; ``routes`` are the paths metrics name (others count as ``other``)."""

    def __init__(self, app: ASGIApp, body_limit: int, access: ControlAccess, metrics: CascadeMetrics,
                 routes: Collection[str], feedback_access: ControlAccess | None = None,
                 tenants: TenantAccess | None = None) -> None:
        self.app = app
        self.feedback_access = feedback_access or ControlAccess.from_token(None, section="feedback")
        self.body_limit = body_limit
        self.access = access
        self.metrics = metrics
        self.routes = frozenset(routes)
        self.tenants = tenants or TenantAccess()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _answer(counted, *refusal)
                return
            try:
                receive = await self._bounded(scope, receive)
            except BodyTooLarge:
                await _answer(counted, 413, "payload_too_large",
                              f"request body is over the limit of {self.body_limit} bytes")
                return
            await self.app(scope, receive, counted)
        finally:
            self._count(scope["path"], status)

    def _refusal(self, scope: Scope) -> tuple[int, str, str, dict[str, str]] | None:
        headers = _headers(scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.body_limit:
            message = f"request body of {declared} bytes is over the limit of {self.body_limit}"
            return 413, "payload_too_large", message, {}
        route = (scope["method"], scope["path"])
        if self.tenants.enabled and route in TENANT_ROUTES:
            tenant = self.tenants.tenant_of(headers.get("authorization"))
            admin = route == ("GET", "/v1/budget") and self.access.refusal(headers.get("authorization")) is None
            if tenant is None and not admin:
                return 401, "unauthorized", ("this app serves tenants: send 'Authorization: Bearer <token>' with your "
                                             "tenant's token"), {"WWW-Authenticate": "Bearer"}
            scope.setdefault("state", {})["tenant"] = tenant
        if route in MUTATIONS or route in FEEDBACK:
            access = self.feedback_access if route in FEEDBACK else self.access
            refused = access.refusal(headers.get("authorization"))
            if refused is not None:
                extra = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else {}
                return refused.status, refused.error, refused.message, extra
        return None

    async def _bounded(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` as is when the length is declared (and checked); else the body read up to the limit."""
        if "content-length" in _headers(scope):
            return receive
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.body_limit:
                raise BodyTooLarge
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        return replay

    def _count(self, path: str, status: int) -> None:
        route = path if path in self.routes else "other"
        self.metrics.requests.inc(tags={"path": route, "status": str(status)})
        if 400 <= status < 500:
            self.metrics.rejected.inc(tags={"status": str(status)})


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


async def _answer(send: Send, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": error, "message": message, "fields": []}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
