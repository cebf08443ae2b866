"""Any OpenAI-compatible completions server that speaks vLLM's extensions (e.g. ``vllm serve``).

Prompts go out as token ids (the same ids every backend scores), batched per request;
``allowed_token_ids`` restricts the answer to the label tokens and ``return_tokens_as_token_ids``
keys the returned log-probabilities by token id. The server must run with
``--logprobs-mode processed_logprobs`` so those log-probabilities are the label-restricted ones.

Each HTTP request has a timeout; connection errors, timeouts, HTTP 429 and 5xx are retried
``max_retries`` times with exponential back-off, then raise
:class:`~cascade.experts.errors.ExpertUnavailable`. Other HTTP errors raise
:class:`~cascade.experts.errors.ExpertError` at once.

>>> engine = OpenAIEngine("http://127.0.0.1:8000", max_model_len=2048)  # doctest: +SKIP
>>> engine.score([[1, 2, 3]], [4256, 2401])                             # doctest: +SKIP
array([[-0.31, -1.32]])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.experts.engines.base import Generation, label_row
from cascade.experts.errors import ExpertError, ExpertUnavailable
from cascade.trace_context import carried

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class OpenAIEngine:
    """Scores and generates through ``/v1/completions`` of a running server."""

    def __init__(self, base_url: str, *, max_model_len: int, model: str | None = None, timeout_s: float = 30.0,
                 max_retries: int = 2, batch_size: int = 16, backoff_s: float = 0.5,
                 api_key: str | None = None) -> None:
        root = base_url.rstrip("/")
        self.base_url = root.removesuffix("/v1")
        self.max_model_len = max_model_len
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.backoff_s = backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: Any = None
        self._model_id: str | None = None

    def start(self) -> None:
        """Check that the server answers and serves the model."""
        self._resolve(self._send("GET", "/v1/models"))

    async def astart(self) -> None:
        async with self._async_client() as client:
            self._resolve(await self._asend(client, "GET", "/v1/models"))

    def score(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        if self._model_id is None:
            self.start()
        rows = [self._label_rows(self._send("POST", "/v1/completions", self._score_body(chunk, label_token_ids)),
                                 len(chunk), label_token_ids) for chunk in self._chunks(prompts)]
        return np.concatenate(rows) if rows else np.zeros((0, len(label_token_ids)))

    async def ascore(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        async with self._async_client() as client:
            if self._model_id is None:
                self._resolve(await self._asend(client, "GET", "/v1/models"))
            chunks = self._chunks(prompts)
            replies = await asyncio.gather(*[
                self._asend(client, "POST", "/v1/completions", self._score_body(chunk, label_token_ids))
                for chunk in chunks
            ])
        rows = [self._label_rows(reply, len(chunk), label_token_ids) for reply, chunk in zip(replies, chunks)]
        return np.concatenate(rows) if rows else np.zeros((0, len(label_token_ids)))

    def generate(self, prompt: list[int], max_tokens: int) -> Generation:
        if self._model_id is None:
            self.start()
        return _generation(self._send("POST", "/v1/completions", self._generate_body(prompt, max_tokens)))

    async def agenerate(self, prompt: list[int], max_tokens: int) -> Generation:
        async with self._async_client() as client:
            if self._model_id is None:
                self._resolve(await self._asend(client, "GET", "/v1/models"))
            reply = await self._asend(client, "POST", "/v1/completions", self._generate_body(prompt, max_tokens))
        return _generation(reply)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _chunks(self, prompts: Sequence[list[int]]) -> list[list[list[int]]]:
        return [list(prompts[i:i + self.batch_size]) for i in range(0, len(prompts), self.batch_size)]

    def _score_body(self, prompts: list[list[int]], label_token_ids: Sequence[int]) -> dict[str, Any]:
        return {"model": self._model_id, "prompt": prompts, "max_tokens": 1, "temperature": 0.0,
                "logprobs": len(label_token_ids), "allowed_token_ids": list(label_token_ids),
                "return_tokens_as_token_ids": True}

    def _generate_body(self, prompt: list[int], max_tokens: int) -> dict[str, Any]:
        return {"model": self._model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}

    def _label_rows(self, reply: dict[str, Any], n: int, label_token_ids: Sequence[int]) -> np.ndarray:
        choices = sorted(reply.get("choices", []), key=lambda c: c["index"])
        if len(choices) != n:
            raise ExpertError(f"{self.base_url} returned {len(choices)} choices for {n} prompts")
        rows = []
        for choice in choices:
            top = (choice.get("logprobs") or {}).get("top_logprobs") or [{}]
            rows.append(label_row({int(key.rsplit(":", 1)[-1]): value for key, value in top[0].items()},
                                  label_token_ids))
        return np.stack(rows)

    def _resolve(self, reply: dict[str, Any]) -> None:
        served = {entry["id"]: entry for entry in reply.get("data", [])}
        if not served:
            raise ExpertError(f"{self.base_url} serves no model")
        name = self.model or next(iter(served))
        if name not in served:
            raise ExpertError(f"{self.base_url} does not serve '{name}'; it serves {sorted(served)}")
        server_len = served[name].get("max_model_len")
        if server_len is not None and server_len < self.max_model_len:
            raise ExpertError(
                f"{self.base_url} serves '{name}' with max_model_len={server_len} < expert.max_model_len="
                f"{self.max_model_len}: lower expert.max_model_len or restart the server with a larger --max-model-len"
            )
        self._model_id = name

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s, headers=self._headers)
        failure = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
                continue
            reply, failure = self._outcome(path, response)
            if reply is not None:
                return reply
        raise self._unavailable(path, failure)

    async def _asend(self, client: Any, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        failure = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = await client.request(method, path, json=body, headers=carried() or None)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
                continue
            reply, failure = self._outcome(path, response)
            if reply is not None:
                return reply
        raise self._unavailable(path, failure)

    def _async_client(self) -> Any:
        import httpx

        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, headers=self._headers)

    def _outcome(self, path: str, response: Any) -> tuple[dict[str, Any] | None, str]:
        """The JSON reply, or the failure to retry; raises for errors a retry cannot fix."""
        if response.status_code < 400:
            return response.json(), ""
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        detail = (error.get("message") if isinstance(error, dict) else error) or response.text
        failure = f"HTTP {response.status_code}: {str(detail)[:300]}"
        if response.status_code in RETRY_STATUS:
            return None, failure
        raise ExpertError(f"{self.base_url}{path} rejected the request: {failure}")

    def _unavailable(self, path: str, failure: str) -> ExpertUnavailable:
        return ExpertUnavailable(
            f"OpenAI-compatible server at {self.base_url} did not answer {path} after {self.max_retries + 1} "
            f"attempt(s) (timeout {self.timeout_s:g}s each): {failure}"
        )


def _generation(reply: dict[str, Any]) -> Generation:
    choice = reply["choices"][0]
    return Generation(choice.get("text") or "", int(reply.get("usage", {}).get("completion_tokens", 0)))
