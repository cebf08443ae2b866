"""vLLM in this process: ``vllm.LLM`` for batch work, ``AsyncLLM`` inside an asyncio server.

The engine starts on first use. ``score``/``generate`` (sync) start a ``vllm.LLM``; ``ascore``/
``agenerate`` start an ``AsyncLLM`` in a worker thread (the loop keeps running during the
~minute-long start) and then await ``engine.generate`` per prompt, so concurrent requests share
vLLM's continuous batching. An engine started sync also serves async calls (in a worker thread);
one started async refuses sync calls, which would deadlock its loop.

In-process calls have no timeout of their own: an asyncio caller bounds them with
``asyncio.wait_for``, and cancelling aborts the engine requests. vLLM spawns processes: scripts
must start engines under ``if __name__ == "__main__":``.

>>> engine = VllmEngine("/models/smollm2", dtype="bfloat16", max_model_len=2048,
...                     kv_cache_gib=1, max_num_seqs=16)                     # doctest: +SKIP
>>> engine.score([[1, 2, 3]], [4256, 2401])                                 # doctest: +SKIP
array([[-0.31, -1.32]])
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.experts.engines.base import Generation, label_row
from cascade.experts.errors import ExpertError, ExpertUnavailable

_GIB = 1 << 30


def vllm_env(kv_cache_gib: float) -> dict[str, str]:
    """Environment for vLLM on CPU: KV cache in whole GiB, and no core held back for vLLM itself.

    Pass it to Ray replicas with ``runtime_env={"env_vars": vllm_env(...)}``; on GPUs it is inert.
    """
    return {"VLLM_CPU_KVCACHE_SPACE": str(max(1, math.ceil(kv_cache_gib))), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


class VllmEngine:
    """Scores and generates with a vLLM engine in this process (started on first use)."""

    def __init__(self, model_dir: str | Path, *, dtype: str, max_model_len: int, kv_cache_gib: float,
                 max_num_seqs: int, max_choices: int = 10, enforce_eager: bool = True, prefix_caching: bool = True,
                 seed: int = 0) -> None:
        self.kv_cache_gib = kv_cache_gib
        self.engine_args: dict[str, Any] = dict(
            model=str(model_dir), dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager, enable_prefix_caching=prefix_caching, seed=seed,
            logprobs_mode="processed_logprobs",
            kv_cache_memory_bytes=int(kv_cache_gib * _GIB), max_logprobs=max(20, max_choices),
        )
        self._llm: Any = None
        self._async_llm: Any = None
        self._async_lock: asyncio.Lock | None = None
        self._sync_lock = threading.Lock()

    def start(self) -> None:
        """Start the batch engine (``vllm.LLM``) now."""
        self._batch_engine()

    async def astart(self) -> None:
        """Start the async engine (``AsyncLLM``) now, without blocking the running loop."""
        await self._async_engine()

    def score(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        from vllm.inputs import TokensPrompt

        params = self._score_params(label_token_ids)
        with self._sync_lock:
            outputs = self._batch_engine().generate(
                [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        return _label_rows(outputs, label_token_ids)

    async def ascore(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        engine = await self._async_engine()
        if engine is None:
            return await asyncio.to_thread(self.score, prompts, label_token_ids)
        params = self._score_params(label_token_ids)
        outputs = await asyncio.gather(*[self._request(engine, p, params) for p in prompts])
        return _label_rows(outputs, label_token_ids)

    def generate(self, prompt: list[int], max_tokens: int) -> Generation:
        from vllm.inputs import TokensPrompt

        with self._sync_lock:
            (output,) = self._batch_engine().generate(
                [TokensPrompt(prompt_token_ids=list(prompt))], self._generate_params(max_tokens), use_tqdm=False)
        return Generation(output.outputs[0].text, len(output.outputs[0].token_ids))

    async def agenerate(self, prompt: list[int], max_tokens: int) -> Generation:
        engine = await self._async_engine()
        if engine is None:
            return await asyncio.to_thread(self.generate, prompt, max_tokens)
        output = await self._request(engine, prompt, self._generate_params(max_tokens))
        return Generation(output.outputs[0].text, len(output.outputs[0].token_ids))

    def close(self) -> None:
        """Shut the engine's processes down (idempotent)."""
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None
        if self._async_llm is not None:
            self._async_llm.shutdown()
            self._async_llm = None

    def _batch_engine(self) -> Any:
        if self._async_llm is not None:
            raise ExpertError("this vLLM engine was started by an async call (AsyncLLM); use ajudge/aexplain")
        if self._llm is None:
            self._apply_env()
            from vllm import LLM

            self._llm = self._started(lambda: LLM(**self.engine_args))
        return self._llm

    async def _async_engine(self) -> Any:
        """The AsyncLLM (started once, in a worker thread), or None when a batch engine exists."""
        if self._llm is not None:
            return None
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if self._async_llm is None:
                self._apply_env()
                from vllm.engine.arg_utils import AsyncEngineArgs
                from vllm.v1.engine.async_llm import AsyncLLM

                args = AsyncEngineArgs(**self.engine_args, disable_log_stats=True)
                self._async_llm = await asyncio.to_thread(self._started, lambda: AsyncLLM.from_engine_args(args))
        return self._async_llm

    def _started(self, build: Any) -> Any:
        try:
            return build()
        except Exception as exc:
            raise ExpertUnavailable(f"vLLM could not start {self.engine_args['model']}: {exc}") from exc

    def _apply_env(self) -> None:
        for name, value in vllm_env(self.kv_cache_gib).items():
            os.environ.setdefault(name, value)

    @staticmethod
    async def _request(engine: Any, prompt: list[int], params: Any) -> Any:
        from vllm.inputs import TokensPrompt

        final = None
        async for output in engine.generate(TokensPrompt(prompt_token_ids=list(prompt)), params,
                                            request_id=uuid.uuid4().hex):
            final = output
        return final

    @staticmethod
    def _score_params(label_token_ids: Sequence[int]) -> Any:
        from vllm import SamplingParams

        return SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(label_token_ids),
                              allowed_token_ids=list(label_token_ids))

    @staticmethod
    def _generate_params(max_tokens: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(max_tokens=max_tokens, temperature=0.0)


def _label_rows(outputs: Sequence[Any], label_token_ids: Sequence[int]) -> np.ndarray:
    """Label log-probabilities ``(n, k)`` from vLLM request outputs (first generated token)."""
    tops = [{token: lp.logprob for token, lp in o.outputs[0].logprobs[0].items()} for o in outputs]
    return np.stack([label_row(top, label_token_ids) for top in tops]) if tops else np.zeros((0, len(label_token_ids)))
