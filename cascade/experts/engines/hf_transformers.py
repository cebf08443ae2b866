"""Plain transformers on the same token ids: the comparison baseline for the vLLM engines.

Scoring runs the decoder over right-padded batches (sorted by length), takes the hidden state at
each prompt's last token, applies the output head and normalises over the label tokens, which is
what vLLM returns for generation restricted to those tokens.

>>> engine = TransformersEngine("/models/smollm2", tokenizer, dtype="bfloat16", batch_size=8)  # doctest: +SKIP
>>> engine.score([[1, 2, 3]], [4256, 2401])                                                    # doctest: +SKIP
array([[-0.31, -1.32]])
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.experts.engines.base import Generation
from cascade.experts.errors import ExpertUnavailable


class TransformersEngine:
    """Scores and generates with ``AutoModelForCausalLM`` in this process (loaded on first use)."""

    def __init__(self, model_dir: str | Path, tokenizer: Any, *, dtype: str = "bfloat16", batch_size: int = 8) -> None:
        self.model_dir = str(model_dir)
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Load the model now."""
        with self._lock:
            self._loaded()

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    def score(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        import torch

        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        scores = np.zeros((len(prompts), len(label_token_ids)))
        order = np.argsort(lengths, kind="stable")
        labels = torch.tensor(list(label_token_ids))
        with self._lock, torch.inference_mode():
            model = self._loaded()
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                ids = torch.full((len(batch), int(lengths[batch].max())), self._pad_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(batch):
                    ids[row, : lengths[i]] = torch.tensor(prompts[i])
                    mask[row, : lengths[i]] = 1
                hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
                last = hidden[torch.arange(len(batch)), torch.from_numpy(lengths[batch] - 1)]
                logits = model.get_output_embeddings()(last).float()[:, labels]
                scores[batch] = torch.log_softmax(logits, dim=-1).numpy()
        return scores

    async def ascore(self, prompts: Sequence[list[int]], label_token_ids: Sequence[int]) -> np.ndarray:
        return await asyncio.to_thread(self.score, prompts, label_token_ids)

    def generate(self, prompt: list[int], max_tokens: int) -> Generation:
        import torch

        ids = torch.tensor([prompt])
        with self._lock, torch.inference_mode():
            out = self._loaded().generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 do_sample=False, pad_token_id=self._pad_id)
        new = out[0, len(prompt):].tolist()
        return Generation(self.tokenizer.decode(new, skip_special_tokens=True), len(new))

    async def agenerate(self, prompt: list[int], max_tokens: int) -> Generation:
        return await asyncio.to_thread(self.generate, prompt, max_tokens)

    def close(self) -> None:
        self._model = None

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)

    def _loaded(self) -> Any:
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM

            dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
            try:
                self._model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).eval()
            except (OSError, ValueError) as exc:
                raise ExpertUnavailable(f"transformers could not load {self.model_dir}: {exc}") from exc
        return self._model
