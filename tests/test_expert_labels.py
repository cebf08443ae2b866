"""Whole-word label scoring on the tiny Llama's real BPE tokenizer: every spelling counts, and
labels that share first tokens are told apart by constrained decoding over their token trie."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cascade.config import ExpertConfig
from cascade.experts import LLMExpert, make_expert
from cascade.experts.labels import LabelScorer, end_of_turn_id, spelling_tokens
from cascade.experts.tokens import PromptEncoder, load_tokenizer

MAILS = ["Cheap meds, click now to buy", "Minutes of Monday's project meeting attached", "You won a free prize"]


@pytest.fixture(scope="module")
def encoder(tiny_llama: Path) -> PromptEncoder:
    return PromptEncoder(load_tokenizer(tiny_llama), ["ham", "spam"])


@pytest.fixture(scope="module")
def model(tiny_llama: Path) -> object:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()


def _expert(tiny_llama: Path, labels: list[str]) -> LLMExpert:
    return make_expert(ExpertConfig(kind="transformers", model=str(tiny_llama), dtype="float32", max_model_len=1024,
                                    max_input_tokens=64, labels=labels))


@pytest.fixture(scope="module")
def ham_spam(tiny_llama: Path) -> Iterator[LLMExpert]:
    with _expert(tiny_llama, ["ham", "spam"]) as expert:
        yield expert


def _next_token_logprobs(model: object, prompt: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([prompt])).logits[0, -1].float()  # type: ignore[operator]
    return torch.log_softmax(logits, -1).numpy()


def test_each_spelling_is_the_word_as_written_after_the_header_then_the_end_of_turn(encoder: PromptEncoder) -> None:
    tokenizer = encoder.tokenizer
    end = end_of_turn_id(encoder)
    assert tokenizer.convert_ids_to_tokens(end) == "<|im_end|>"  # the chat template's, not the tokenizer's </s>
    (ham, spam) = spelling_tokens(encoder, ["ham", "spam"])
    assert [tokenizer.decode(list(s[:-1])) for s in spam] == ["spam", "Spam", "SPAM", " spam", " Spam"]
    assert all(s[-1] == end for s in [*ham, *spam])


@pytest.mark.parametrize("labels", [["ham", "spam"], ["spam", "spammy"]])
def test_label_probabilities_are_the_constrained_whole_word_probabilities_of_every_spelling(
        tiny_llama: Path, model: object, labels: list[str]) -> None:
    with _expert(tiny_llama, labels) as expert:
        spellings = spelling_tokens(expert.encoder, labels)
        result = expert.judge(MAILS)
        prompts, _ = expert._prompts(MAILS)
        branches = len(expert.scorer.branches)
    every = [(s, label) for label, seqs in enumerate(spellings) for s in seqs]
    for row, prompt in zip(result.probs, prompts):
        mass = np.zeros(2)
        for sequence, label in every:  # brute force: the constrained chain of every whole spelling, no trie
            chain = 1.0
            for j, token in enumerate(sequence):
                allowed = sorted({s[j] for s, _ in every if len(s) > j and s[:j] == sequence[:j]})
                logp = _next_token_logprobs(model, [*prompt, *sequence[:j]])[allowed]
                chain *= float(np.exp(logp[allowed.index(token)]) / np.exp(logp).sum())
            mass[label] += chain
        np.testing.assert_allclose(row, mass / mass.sum(), atol=1e-5)
    assert np.all(result.completion_tokens == branches)
    assert np.all(result.prompt_tokens >= branches * np.array([len(p) for p in prompts]))  # each call is billed


def test_labels_sharing_first_tokens_are_told_apart_by_the_tokens_after(encoder: PromptEncoder) -> None:
    spam, spammy = spelling_tokens(encoder, ["spam", "spammy"])
    assert spam[0][0] == spammy[0][0]  # "spam" and "spammy" start with the same token
    scorer = LabelScorer(encoder, ["spam", "spammy"])
    assert (spam[0][0],) in [b.prefix for b in scorer.branches]  # the model is asked what follows "spam"


def test_async_whole_word_scores_equal_sync_ones(tiny_llama: Path) -> None:
    import asyncio

    with _expert(tiny_llama, ["spam", "spammy"]) as expert:
        np.testing.assert_allclose(asyncio.run(expert.ajudge(MAILS)).probs, expert.judge(MAILS).probs, atol=1e-6)


def test_labels_that_are_one_word_up_to_case_fail_clearly(encoder: PromptEncoder) -> None:
    with pytest.raises(ValueError, match="same word up to case or spacing"):
        LabelScorer(encoder, ["spam", "Spam"])
