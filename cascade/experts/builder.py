"""Question prompts for a batch: sample + retrieved shots, fitted to the context window.

Budget: the sample text is cut to ``max_input_tokens`` tokens, each shot to ``shot_max_tokens``;
the builder checks at construction that template + shots + sample + the answer tokens fit in
``max_model_len``, so the engine never rejects a prompt mid-batch. Rare token-boundary effects
that still overflow are fixed by cutting the sample further (and counted as truncated).

>>> builder = PromptBuilder(encoder, EMAIL, max_input_tokens=384, max_model_len=2048)  # doctest: +SKIP
>>> prompts, truncated = builder.build(["Cheap meds!"])                                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cascade.experts.errors import ExpertError
from cascade.experts.prompts import PromptTemplate, as_data, fill, join_labels
from cascade.experts.tokens import Messages, PromptEncoder

PROMPT_FORMAT = 2
"""Version of how prompts are assembled from templates and shots; bump it when that changes."""
_MAX_REFITS = 4


class PromptBuilder:
    """Turns samples (and optional retrieved shots) into token-id prompts that fit the context."""

    def __init__(self, encoder: PromptEncoder, template: PromptTemplate, *, max_input_tokens: int,
                 max_model_len: int, shots: int = 0, shot_max_tokens: int = 128,
                 pool_texts: Sequence[str] | None = None, pool_labels: np.ndarray | None = None,
                 answer_tokens: int = 1) -> None:
        if shots and (pool_texts is None or pool_labels is None):
            raise ValueError(f"shots={shots} needs a labelled pool")
        self.encoder = encoder
        self.template = template
        self.max_input_tokens = max_input_tokens
        self.max_model_len = max_model_len
        self.shots = shots
        self.shot_max_tokens = shot_max_tokens
        self.answer_tokens = answer_tokens
        self._pool_texts = list(pool_texts) if pool_texts is not None else []
        self._pool_labels = np.asarray(pool_labels) if pool_labels is not None else np.zeros(0, dtype=int)
        self._shot_text: dict[int, str] = {}
        self._labels = join_labels(encoder.labels)
        self._check_budget()

    def messages(self, text: str, shots: Sequence[tuple[str, str]] = ()) -> Messages:
        """The chat for one sample (``text`` already cleaned and truncated) after ``(shot text, label
        word)`` shots: the system message with the task, then the shots as user turns answered by
        their label, then the sample; inline when the question template has ``{examples}``."""
        system: Messages = [{"role": "system", "content": fill(self.template.system, labels=self._labels)}]
        if "{examples}" in self.template.question:
            examples = self.template.examples_header + "".join(
                fill(self.template.example, text=shot, label=label) for shot, label in shots) if shots else ""
            return [*system, {"role": "user", "content": fill(self.template.question, examples=examples, text=text,
                                                               labels=self._labels)}]
        turns = system
        for shot, label in shots:
            turns = [*turns, {"role": "user", "content": fill(self.template.question, text=shot, labels=self._labels)},
                     {"role": "assistant", "content": label}]
        return [*turns, {"role": "user", "content": fill(self.template.question, text=text, labels=self._labels)}]

    def build(self, texts: Sequence[str], shot_index: np.ndarray | None = None) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per sample and whether its text was cut.

        ``shot_index`` ``(n, k)`` holds pool indices, most similar first; shots are shown least
        similar first so the closest example sits next to the question.
        """
        shots = [self._shots(row[::-1]) for row in shot_index] if shot_index is not None else [[]] * len(texts)
        texts = [self.as_data(t) for t in texts]
        kept, truncated = self.encoder.truncate(texts, self.max_input_tokens)
        prompts = self.encoder.encode_many([self.messages(t, s) for t, s in zip(kept, shots)])
        limit = self.max_model_len - self.answer_tokens
        for i in np.flatnonzero([len(p) > limit for p in prompts]):
            prompts[i] = self._refit(texts[i], kept[i], shots[i], len(prompts[i]) - limit)
            truncated[i] = True
        return prompts, truncated

    def as_data(self, text: str) -> str:
        """Untrusted text without the template's tags or the tokenizer's special tokens."""
        return as_data(text, self.template, self.encoder.special_tokens)

    def _refit(self, text: str, kept: str, shots: list[tuple[str, str]], excess: int) -> list[int]:
        """Cut the sample further until the assembled prompt fits."""
        budget = self.encoder.count(kept)
        for _ in range(_MAX_REFITS):
            budget -= excess + 8
            (kept,), _ = self.encoder.truncate([text], max(budget, 0))
            ids = self.encoder.encode(self.messages(kept, shots))
            excess = len(ids) - (self.max_model_len - self.answer_tokens)
            if excess <= 0:
                return ids
        raise ExpertError(f"cannot fit a prompt into max_model_len={self.max_model_len}")

    def _shots(self, index: Sequence[int]) -> list[tuple[str, str]]:
        """(truncated text, label word) of pool samples, truncation cached per sample."""
        missing = [i for i in index if i not in self._shot_text]
        if missing:
            cut, _ = self.encoder.truncate([self.as_data(self._pool_texts[i]) for i in missing], self.shot_max_tokens)
            self._shot_text.update(zip(missing, cut))
        return [(self._shot_text[i], self.encoder.labels[self._pool_labels[i]]) for i in index]

    def _check_budget(self) -> None:
        longest_label = max(self.encoder.labels, key=len)
        frame = len(self.encoder.encode(self.messages("", [("", longest_label)] * self.shots)))
        need = frame + self.shots * self.shot_max_tokens + self.max_input_tokens + self.answer_tokens
        if need > self.max_model_len:
            raise ValueError(
                f"prompts need up to {need} tokens (template and chat turns {frame}, shots {self.shots} x "
                f"{self.shot_max_tokens}, max_input_tokens {self.max_input_tokens}, answer {self.answer_tokens}) "
                f"but expert.max_model_len is "
                f"{self.max_model_len}: lower max_input_tokens, shots or shot_max_tokens, or raise max_model_len"
            )
