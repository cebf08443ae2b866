"""The LLM expert: prompt, score the label tokens, turn log-probabilities into probabilities.

One class serves every engine (in-process vLLM, an OpenAI-compatible server, transformers): it
builds the token-id prompts (template, retrieved shots, truncation), scores each label word as a
whole word (:class:`~cascade.experts.labels.LabelScorer`: every spelling, constrained decoding),
normalises over the labels and prices the tokens with the :class:`~cascade.types.CostModel`.

>>> from cascade.config import ExpertConfig
>>> from cascade.experts import make_expert
>>> with make_expert(ExpertConfig(kind="vllm", model="smollm2-135m-instruct")) as expert:  # doctest: +SKIP
...     expert.judge(["Cheap meds, click now"]).probs
array([[0.27, 0.73]])
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.experts.builder import PromptBuilder
from cascade.experts.engines.base import Engine, Generation
from cascade.experts.errors import ExpertError
from cascade.experts.labels import LabelScorer, LabelScores
from cascade.experts.prompts import (
    Modality,
    PromptTemplate,
    as_data,
    default_template,
    fill,
    join_labels,
    serialize_rows,
)
from cascade.experts.protocol import ExpertInput
from cascade.experts.result import ExpertResult, Explanation
from cascade.experts.retrieval import NeighbourRetriever
from cascade.experts.tokens import Messages, PromptEncoder
from cascade.types import CostModel


class LLMExpert:
    """Label probabilities from an LLM engine's label-token log-probabilities.

    ``retriever`` (with ``shots`` >= 1) adds the k most similar labelled pool samples as
    in-context examples. Texts go in as ``list[str]``; feature rows as a float array, serialised
    with ``feature_names``.
    """

    def __init__(self, engine: Engine, tokenizer: Any, labels: Sequence[str], *, template: str | None = None,
                 shots: int = 0, retriever: NeighbourRetriever | None = None, max_input_tokens: int = 384,
                 shot_max_tokens: int = 128, max_model_len: int = 2048, explain_max_tokens: int = 96,
                 feature_names: Sequence[str] | None = None, cost: CostModel | None = None) -> None:
        if shots and retriever is None:
            raise ValueError(f"shots={shots} needs a labelled pool to retrieve examples from")
        if retriever is not None and len(retriever.label_names) != len(labels):
            raise ValueError(f"{len(labels)} label words {list(labels)} for a pool labelled {retriever.label_names}")
        if explain_max_tokens >= max_model_len:
            raise ValueError("explain_max_tokens must be smaller than max_model_len")
        self.engine = engine
        self.encoder = PromptEncoder(tokenizer, labels)
        self.scorer = LabelScorer(self.encoder, labels)
        self.label_names = tuple(labels)
        self.template = template
        self.shots = shots
        self.retriever = retriever if shots else None
        self.max_input_tokens = max_input_tokens
        self.shot_max_tokens = shot_max_tokens
        self.max_model_len = max_model_len
        self.explain_max_tokens = explain_max_tokens
        self.feature_names = tuple(feature_names) if feature_names else None
        self.cost = cost or CostModel()
        self._builders: dict[Modality, PromptBuilder] = {}
        self._prompt_lock = threading.Lock()
        self._builder(self.retriever.modality if self.retriever is not None else "text")  # budget checked now

    def start(self) -> None:
        """Start the engine now (otherwise the first call does)."""
        self.engine.start()

    async def astart(self) -> None:
        """Start the engine for async use without blocking the running loop."""
        await self.engine.astart()

    def judge(self, X: ExpertInput) -> ExpertResult:
        """Probabilities ``(n, k)`` over the label words, with usage per sample."""
        start = time.perf_counter()
        if len(X) == 0:
            return ExpertResult.empty(self.label_names)
        prompts, truncated = self._prompts(X)
        scores = self.scorer.score(self.engine, prompts)
        return self._result(scores, truncated, time.perf_counter() - start)

    async def ajudge(self, X: ExpertInput) -> ExpertResult:
        """:meth:`judge` for asyncio servers: prompts are built in a worker thread, the engine is awaited."""
        start = time.perf_counter()
        if len(X) == 0:
            return ExpertResult.empty(self.label_names)
        prompts, truncated = await asyncio.to_thread(self._prompts, X)
        scores = await self.scorer.ascore(self.engine, prompts)
        return self._result(scores, truncated, time.perf_counter() - start)

    def explain(self, sample: str | np.ndarray, question: str | None = None,
                history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        """A short rationale (at most ``explain_max_tokens`` tokens) generated by the same engine.

        First call: ``explain(text, label="spam")`` ("why is this spam?") or with a ``question``.
        Follow-up: ``explain(text, question="Which words?", history=previous.history)``. Old turns
        are dropped (and ``truncated`` set) when the chat outgrows the context.
        """
        start = time.perf_counter()
        prompt, messages, truncated = self._chat(sample, question, history, label)
        return self._explanation(self.engine.generate(prompt, self.explain_max_tokens), prompt, messages,
                                 truncated, time.perf_counter() - start)

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        """Async :meth:`explain`."""
        start = time.perf_counter()
        prompt, messages, truncated = await asyncio.to_thread(self._chat, sample, question, history, label)
        generation = await self.engine.agenerate(prompt, self.explain_max_tokens)
        return self._explanation(generation, prompt, messages, truncated, time.perf_counter() - start)

    def close(self) -> None:
        """Shut the engine down (idempotent)."""
        self.engine.close()

    def __enter__(self) -> LLMExpert:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prompts(self, X: ExpertInput) -> tuple[list[list[int]], np.ndarray]:
        texts, modality = self._texts(X)
        with self._prompt_lock:
            shots = self.retriever.query(X)[0] if self.retriever is not None else None
            return self._builder(modality).build(texts, shots)

    def _result(self, scores: LabelScores, truncated: np.ndarray, wall_s: float) -> ExpertResult:
        """Probabilities from the label scores; every scoring call is billed (prompt + one token)."""
        logprobs = scores.logprobs
        shifted = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
        n = len(logprobs)
        prompt_tokens = scores.prompt_tokens
        completion_tokens = np.full(n, scores.calls, dtype=np.int64)
        return ExpertResult.from_arrays(
            shifted / shifted.sum(axis=1, keepdims=True), prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, latency_s=np.full(n, wall_s / n),
            cost=self.cost.expert_cost(prompt_tokens, completion_tokens), truncated=truncated,
            label_names=self.label_names,
        )

    def _chat(self, sample: str | np.ndarray, question: str | None, history: list[dict[str, str]] | None,
              label: str | None) -> tuple[list[int], Messages, bool]:
        if history:
            if not question:
                raise ValueError("a follow-up on a history needs a question")
            messages, truncated = [*history, {"role": "user", "content": question}], False
        else:
            (text,), modality = self._texts([sample] if isinstance(sample, str) else np.reshape(sample, (1, -1)))
            template = self._template(modality)
            (text,), cut = self.encoder.truncate([as_data(text, template, self.encoder.special_tokens)],
                                                 self.max_input_tokens)
            request = question or (fill(template.explain_label, label=label) if label
                                   else fill(template.explain_open, labels=join_labels(self.label_names)))
            messages = [{"role": "user", "content": fill(template.explain, text=text, request=request)}]
            truncated = bool(cut[0])
        limit = self.max_model_len - self.explain_max_tokens
        prompt = self.encoder.encode(messages)
        while len(prompt) > limit and len(messages) >= 5:  # drop the oldest follow-up question and answer
            messages, truncated = [*messages[:2], *messages[4:]], True
            prompt = self.encoder.encode(messages)
        if len(prompt) > limit:
            raise ExpertError(f"the chat needs {len(prompt)} prompt tokens; at most {limit} fit "
                              f"(max_model_len {self.max_model_len} - explain_max_tokens {self.explain_max_tokens})")
        return prompt, messages, truncated

    def _explanation(self, generation: Generation, prompt: list[int], messages: Messages, truncated: bool,
                     wall_s: float) -> Explanation:
        text = generation.text.strip()
        return Explanation(
            text=text, history=[*messages, {"role": "assistant", "content": text}], prompt_tokens=len(prompt),
            completion_tokens=generation.completion_tokens, latency_s=wall_s,
            cost=float(self.cost.expert_cost(len(prompt), generation.completion_tokens)), truncated=truncated,
        )

    def _texts(self, X: ExpertInput) -> tuple[list[str], Modality]:
        if isinstance(X, np.ndarray) and X.dtype.kind in "fiu":
            return serialize_rows(X, self.feature_names), "features"
        if any(not isinstance(x, str) for x in X):
            raise TypeError("an expert takes a list of texts or a float array of feature rows")
        return list(X), "text"

    def _template(self, modality: Modality) -> PromptTemplate:
        return default_template(modality, self.label_names, self.template)

    def _builder(self, modality: Modality) -> PromptBuilder:
        if modality not in self._builders:
            retriever = self.retriever
            if retriever is not None and retriever.modality != modality:
                raise ValueError(f"this expert's example pool holds {retriever.modality}; it cannot judge {modality}")
            self._builders[modality] = PromptBuilder(
                self.encoder, self._template(modality), max_input_tokens=self.max_input_tokens,
                max_model_len=self.max_model_len, shots=self.shots, shot_max_tokens=self.shot_max_tokens,
                pool_texts=self._pool_texts(retriever) if retriever is not None else None,
                pool_labels=retriever.labels if retriever is not None else None,
                answer_tokens=self.scorer.answer_tokens,
            )
        return self._builders[modality]

    def _pool_texts(self, retriever: NeighbourRetriever) -> list[str]:
        if retriever.texts is not None:
            return list(retriever.texts)
        return serialize_rows(retriever.features, self.feature_names)  # type: ignore[arg-type]
