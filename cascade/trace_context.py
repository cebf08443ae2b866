"""The trace context an outgoing expert call carries (W3C ``traceparent`` headers), free of OpenTelemetry.

The Serve router sets it around an expert call when tracing is on (:mod:`deployments.tracing`); the
expert replica sets it again around the call it serves; an HTTP engine adds it to its requests, so
an external OpenAI-compatible server joins the request's trace.

>>> token = carrying({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
>>> carried()["traceparent"][:2]
'00'
>>> released(token); carried()
{}
"""

from __future__ import annotations

import contextvars

_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("cascade_trace_headers",
                                                                                 default=None)


def carrying(headers: dict[str, str] | None) -> contextvars.Token:
    """Make ``headers`` the trace context of the calls made from here on (in this task); undo with :func:`released`."""
    return _HEADERS.set(dict(headers) if headers else None)


def released(token: contextvars.Token) -> None:
    _HEADERS.reset(token)


def carried() -> dict[str, str]:
    """The headers set by :func:`carrying` here (``{}`` when none)."""
    return dict(_HEADERS.get() or {})
