"""The OpenAI-compatible backend's error paths, against a real local HTTP server with scripted replies."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from cascade.experts import ExpertError, ExpertUnavailable
from cascade.experts.engines.openai_http import OpenAIEngine

LABELS = [11, 12]
MODELS = {"data": [{"id": "tiny", "max_model_len": 1024}]}


def _completion(logprobs: list[dict[str, float]]) -> dict[str, Any]:
    choices = [{"index": i, "text": "x", "logprobs": {"top_logprobs": [top]}} for i, top in enumerate(logprobs)]
    return {"choices": choices, "usage": {"completion_tokens": len(logprobs)}}


class ScriptedServer:
    """Answers GET /v1/models, and POSTs from a script of (status, body, delay_s) replies.

    With ``rendezvous`` set, every POST waits there until that many requests are in flight at once.
    """

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any], float]] = []
        self.posts: list[dict[str, Any]] = []
        self.traceparents: list[str | None] = []
        self.rendezvous: threading.Barrier | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply(200, MODELS)

            def do_POST(self) -> None:
                outer.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                outer.traceparents.append(self.headers.get("traceparent"))
                status, body, delay = outer.script.pop(0) if outer.script else (500, {"error": "no reply"}, 0.0)
                if outer.rendezvous is not None:
                    outer.rendezvous.wait(timeout=30.0)  # raises, so no reply at all, if they never meet
                time.sleep(delay)
                self._reply(status, body)

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


def _engine(url: str, **kwargs: Any) -> OpenAIEngine:
    return OpenAIEngine(url, max_model_len=kwargs.pop("max_model_len", 512), backoff_s=0.01, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_label_logprobs_come_back_in_label_order(server: ScriptedServer) -> None:
    server.script.append((200, _completion([{"token_id:12": -0.1, "token_id:11": -2.4}]), 0.0))
    scores = _engine(server.url).score([[1, 2, 3]], LABELS)
    np.testing.assert_allclose(scores, [[-2.4, -0.1]])
    assert server.posts[0]["allowed_token_ids"] == LABELS and server.posts[0]["prompt"] == [[1, 2, 3]]


def test_prompts_are_sent_in_batches_of_batch_size(server: ScriptedServer) -> None:
    top = {"token_id:11": -0.5, "token_id:12": -0.9}
    server.script += [(200, _completion([top, top]), 0.0), (200, _completion([top]), 0.0)]
    assert _engine(server.url, batch_size=2).score([[1], [2], [3]], LABELS).shape == (3, 2)
    assert [len(post["prompt"]) for post in server.posts] == [2, 1]


def test_an_unreachable_server_fails_clearly_after_bounded_retries() -> None:
    engine = _engine(f"http://127.0.0.1:{_free_port()}", max_retries=2)
    with pytest.raises(ExpertUnavailable, match=r"did not answer /v1/models after 3 attempt"):
        engine.score([[1, 2]], LABELS)


def test_a_server_error_is_retried(server: ScriptedServer) -> None:
    top = {"token_id:11": -0.5, "token_id:12": -0.9}
    server.script += [(503, {"error": {"message": "busy"}}, 0.0), (200, _completion([top]), 0.0)]
    assert _engine(server.url, max_retries=1).score([[1]], LABELS).shape == (1, 2)
    assert len(server.posts) == 2


def test_a_rejected_request_is_not_retried(server: ScriptedServer) -> None:
    server.script.append((400, {"error": {"message": "bad prompt"}}, 0.0))
    with pytest.raises(ExpertError, match="HTTP 400: bad prompt"):
        _engine(server.url, max_retries=3).score([[1]], LABELS)
    assert len(server.posts) == 1


def test_a_slow_server_times_out_after_bounded_retries(server: ScriptedServer) -> None:
    server.script += [(200, _completion([]), 2.0)] * 3
    with pytest.raises(ExpertUnavailable, match="ReadTimeout"):
        _engine(server.url, timeout_s=0.2, max_retries=1).score([[1]], LABELS)
    assert len(server.posts) == 2  # the first try and one retry, then it gives up


def test_missing_label_logprobs_point_to_the_processed_logprobs_mode(server: ScriptedServer) -> None:
    server.script.append((200, _completion([{"token_id:11": -0.1, "token_id:99": -3.0}]), 0.0))
    with pytest.raises(ExpertError, match="--logprobs-mode processed_logprobs"):
        _engine(server.url).score([[1]], LABELS)


def test_a_server_with_a_shorter_context_than_configured_is_refused(server: ScriptedServer) -> None:
    with pytest.raises(ExpertError, match="max_model_len=1024 < expert.max_model_len=2048"):
        _engine(server.url, max_model_len=2048).start()


def test_a_model_the_server_does_not_serve_is_refused(server: ScriptedServer) -> None:
    with pytest.raises(ExpertError, match="does not serve 'other'"):
        _engine(server.url, model="other").start()


def test_async_scoring_sends_the_batches_concurrently(server: ScriptedServer) -> None:
    """The server answers only once all three batches are in flight together; one at a time would never meet."""
    top = {"token_id:11": -0.5, "token_id:12": -0.9}
    server.script += [(200, _completion([top]), 0.0)] * 3
    server.rendezvous = threading.Barrier(3)
    scores = asyncio.run(_engine(server.url, batch_size=1, timeout_s=60.0, max_retries=0).ascore([[1], [2], [3]], LABELS))
    assert scores.shape == (3, 2) and len(server.posts) == 3 and not server.rendezvous.broken


def test_generation_returns_text_and_completion_tokens(server: ScriptedServer) -> None:
    reply = {"choices": [{"index": 0, "text": " Because."}], "usage": {"completion_tokens": 3}}
    server.script.append((200, reply, 0.0))
    generation = _engine(server.url).generate([1, 2], max_tokens=8)
    assert (generation.text, generation.completion_tokens) == (" Because.", 3)
    assert server.posts[0]["max_tokens"] == 8


def test_an_expert_call_carries_the_requests_traceparent_to_the_server(server: ScriptedServer) -> None:
    from cascade.trace_context import carrying, released

    top = {"token_id:11": -0.5, "token_id:12": -0.9}
    server.script += [(200, _completion([top]), 0.0)] * 2
    engine = _engine(server.url, batch_size=1)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def traced() -> None:
        token = carrying({"traceparent": traceparent})
        try:
            await engine.ascore([[1]], LABELS)
        finally:
            released(token)
        await engine.ascore([[2]], LABELS)  # outside a traced call: no header

    asyncio.run(traced())
    assert server.traceparents == [traceparent, None]
