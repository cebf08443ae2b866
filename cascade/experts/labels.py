"""Whole-word label probabilities: constrained decoding over every spelling of every label word.

A label word is scored as a whole, not by its first token. Each label has a few spellings
(``spam``, ``Spam``, ``SPAM``, `` spam``, `` Spam``), each tokenised as the model would write it
after the assistant header and ended by the chat template's end-of-turn token. The spellings form a
token trie; the answer is decoded under the constraint that it is one of them:

    P(label) = sum over the label's spellings s of  prod_j P(s_j | prompt, s_<j, next token in the trie)

Only trie nodes whose subtree holds more than one label need the model (a node under which every
spelling belongs to one label passes all its mass to that label). With SmolLM2 and ``ham``/``spam``
every spelling starts with a token of its own, so one restricted next-token call per prompt scores
all ten spellings (``sp`` + ``am`` counts for ``spam`` whatever follows ``sp``, because under the
constraint only ``am`` can follow). Labels that share first tokens (``spam``/``spammy``) need one
more call per shared prefix, on the prompt extended by that prefix (cheap with prefix caching).

>>> scorer = LabelScorer(encoder, ["ham", "spam"])       # doctest: +SKIP
>>> len(scorer.branches)                                  # doctest: +SKIP
1
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cascade.experts.engines.base import Engine
from cascade.experts.tokens import PromptEncoder

SCORING_FORMAT = 2
"""Version of how label words become probabilities (1: first token only; 2: every spelling, whole word)."""
SPELLINGS = (str, str.capitalize, str.upper, lambda w: " " + w, lambda w: " " + w.capitalize())
"""How a label word may be written: as given, Capitalised, UPPER, and with a leading space."""


@dataclass(frozen=True)
class Branch:
    """A trie node where the model chooses: the answer so far and the tokens allowed next."""

    prefix: tuple[int, ...]
    choices: tuple[int, ...]


@dataclass(frozen=True)
class LabelScores:
    """Label log-probabilities ``(n, k)`` (normalised over the labels) and what the calls took."""

    logprobs: np.ndarray
    prompt_tokens: np.ndarray
    calls: int


class LabelScorer:
    """Scores label words as whole words by constrained decoding over their spellings' token trie."""

    def __init__(self, encoder: PromptEncoder, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self.spellings = spelling_tokens(encoder, self.labels)
        self.branches: list[Branch] = []
        self._paths: list[tuple[int, list[tuple[int, int]]]] = []
        self._visit((), [(ids, c) for c, ids_list in enumerate(self.spellings) for ids in ids_list], [])

    @property
    def answer_tokens(self) -> int:
        """The longest answer prefix a scoring call appends to a prompt, plus the scored token."""
        return max(len(b.prefix) for b in self.branches) + 1

    @property
    def max_choices(self) -> int:
        """The most tokens one call must return log-probabilities for."""
        return max(len(b.choices) for b in self.branches)

    def score(self, engine: Engine, prompts: Sequence[list[int]]) -> LabelScores:
        """Label log-probabilities after each prompt: one engine call per branch, whole batch per call."""
        rows = [engine.score(self._extended(prompts, b), b.choices) for b in self.branches]
        return self._combine(rows, prompts)

    async def ascore(self, engine: Engine, prompts: Sequence[list[int]]) -> LabelScores:
        """Async :meth:`score`; the branches' calls run concurrently."""
        rows = await asyncio.gather(*[engine.ascore(self._extended(prompts, b), b.choices) for b in self.branches])
        return self._combine(list(rows), prompts)

    def _extended(self, prompts: Sequence[list[int]], branch: Branch) -> list[list[int]]:
        return [[*p, *branch.prefix] for p in prompts] if branch.prefix else list(prompts)

    def _combine(self, rows: list[np.ndarray], prompts: Sequence[list[int]]) -> LabelScores:
        out = np.full((len(prompts), len(self.labels)), -np.inf)
        for label, path in self._paths:
            out[:, label] = np.logaddexp(out[:, label], sum((rows[b][:, pos] for b, pos in path), np.zeros(len(prompts))))
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        prompt_tokens = sum((lengths + len(b.prefix) for b in self.branches), np.zeros(len(prompts), dtype=np.int64))
        return LabelScores(out, prompt_tokens, len(self.branches))

    def _visit(self, prefix: tuple[int, ...], spellings: list[tuple[tuple[int, ...], int]],
               path: list[tuple[int, int]]) -> None:
        labels = {label for _, label in spellings}
        if len(labels) == 1 and path:
            self._paths.append((labels.pop(), path))
            return
        depth = len(prefix)
        choices = tuple(sorted({ids[depth] for ids, _ in spellings}))
        index = len(self.branches)
        self.branches.append(Branch(prefix, choices))
        for pos, token in enumerate(choices):
            self._visit((*prefix, token), [(ids, c) for ids, c in spellings if ids[depth] == token],
                        [*path, (index, pos)])


def spelling_tokens(encoder: PromptEncoder, labels: Sequence[str]) -> list[list[tuple[int, ...]]]:
    """Per label, the distinct token sequences of its spellings after the assistant header, each
    ended by the end-of-turn token; a spelling shared by two labels is an error."""
    if len(labels) < 2:
        raise ValueError(f"an expert needs at least two label words, got {list(labels)}")
    prefix = encoder.render([{"role": "user", "content": "?"}])
    prefix_ids = encoder.token_ids(prefix)
    end = end_of_turn_id(encoder)
    owner: dict[tuple[int, ...], str] = {}
    per_label = []
    for label in labels:
        if not label.strip():
            raise ValueError("label words must be non-empty")
        sequences: list[tuple[int, ...]] = []
        for spell in SPELLINGS:
            full = encoder.token_ids(prefix + spell(label))
            ids = full[len(prefix_ids):] if full[: len(prefix_ids)] == prefix_ids else encoder.token_ids(spell(label))
            sequence = (*ids, end)
            if owner.get(sequence, label) != label:
                raise ValueError(f"label words {owner[sequence]!r} and {label!r} are the same word up to case or "
                                 "spacing; choose distinct label words")
            owner[sequence] = label
            if sequence not in sequences:
                sequences.append(sequence)
        per_label.append(sequences)
    return per_label


def end_of_turn_id(encoder: PromptEncoder) -> int:
    """The token the chat template writes right after an assistant answer (e.g. ``<|im_end|>``),
    else the tokenizer's end-of-sequence token."""
    tokenizer = encoder.tokenizer
    question = [{"role": "user", "content": "?"}]
    prefix = encoder.token_ids(encoder.render(question))
    answer = encoder.token_ids("x")
    rendered = str(tokenizer.apply_chat_template([*question, {"role": "assistant", "content": "x"}], tokenize=False))
    full = encoder.token_ids(rendered)
    start = len(prefix) + len(answer)
    if full[: start] == prefix + answer and len(full) > start:
        return int(full[start])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither an end-of-turn token in its chat template nor an eos token")
    return int(tokenizer.eos_token_id)
