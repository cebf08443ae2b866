"""Tokenizer-side work shared by every backend: chat rendering, token counts, truncation.

All backends receive the same token ids, built here with the model's own Hugging Face tokenizer
and chat template, so vLLM, a vLLM server and transformers score identical prompts. Label words
are scored as whole words by :mod:`cascade.experts.labels`.

>>> enc = PromptEncoder(tokenizer, ["ham", "spam"])               # doctest: +SKIP
>>> enc.encode([{"role": "user", "content": "Spam?"}])[:3]        # doctest: +SKIP
[1, 4093, 198]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.experts.errors import ExpertError

Messages = list[dict[str, str]]


def load_tokenizer(model_dir: str | Path) -> Any:
    """The model folder's Hugging Face tokenizer; it must carry a chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(tokenizer, "chat_template", None):
        raise ExpertError(f"{model_dir}: the tokenizer has no chat template; use an instruct/chat model")
    return tokenizer


class PromptEncoder:
    """Renders chat messages to token ids; holds the label words the prompts ask for."""

    def __init__(self, tokenizer: Any, labels: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.special_tokens = tuple(sorted({str(t) for t in tokenizer.all_special_tokens} | {
            str(t.content) for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}))

    def render(self, messages: Messages) -> str:
        """The chat template applied, ending with the assistant header. A template that refuses a
        system message gets it as the start of the first user turn."""
        from jinja2 import TemplateError

        try:
            return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        except TemplateError:
            if not messages or messages[0]["role"] != "system" or len(messages) < 2:
                raise
            system, first, *rest = messages
            merged = {"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}
            return self.render([merged, *rest])

    def encode(self, messages: Messages) -> list[int]:
        """Token ids of :meth:`render` (the template already holds any special tokens)."""
        return self.token_ids(self.render(messages))

    def encode_many(self, conversations: Sequence[Messages]) -> list[list[int]]:
        """:meth:`encode` for many conversations in one tokenizer call."""
        rendered = [self.render(messages) for messages in conversations]
        return [list(ids) for ids in self.tokenizer(rendered, add_special_tokens=False)["input_ids"]]

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count(self, text: str) -> int:
        return len(self.token_ids(text))

    def truncate(self, texts: Sequence[str], max_tokens: Sequence[int] | int) -> tuple[list[str], np.ndarray]:
        """Cut each text to its first ``max_tokens`` tokens (at a character offset, so the kept
        part is the original text); returns the texts and which ones were cut."""
        budgets = np.broadcast_to(np.asarray(max_tokens, dtype=np.int64), (len(texts),))
        if len(texts) == 0:
            return [], np.zeros(0, dtype=bool)
        encoded = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        kept, cut = [], np.zeros(len(texts), dtype=bool)
        for i, (text, offsets, budget) in enumerate(zip(texts, encoded["offset_mapping"], budgets)):
            if len(offsets) > budget:
                cut[i] = True
                text = text[: offsets[budget - 1][1]] if budget > 0 else ""
            kept.append(text)
        return kept, cut

