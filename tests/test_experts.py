"""The large tier without an engine server: prompts, label tokens, truncation, cost, the control
expert, and the transformers backend on the tiny random Llama."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cascade import data
from cascade.config import ExpertConfig
from cascade.experts import (
    ExpertError,
    ExpertResult,
    KnnVoteExpert,
    LLMExpert,
    NeighbourRetriever,
    default_template,
    make_expert,
    serialize_rows,
)
from cascade.experts.builder import PromptBuilder
from cascade.experts.engines.hf_transformers import TransformersEngine
from cascade.experts.labels import LabelScorer
from cascade.experts.prompts import EMAIL, MESSAGE, TABULAR, PromptTemplate, join_labels
from cascade.experts.tokens import PromptEncoder, load_tokenizer
from cascade.models import ModelMissing
from cascade.types import CostModel

SPAM = ["Cheap meds, click now to buy viagra", "You won a free prize, claim your money now",
        "Lowest mortgage rates, act now"]
HAM = ["Minutes of Monday's project meeting attached", "Can we move our call to 3pm tomorrow?",
       "The build failed on the release branch, see log"]


def _pool(texts: list[str], y: list[int]) -> data.Dataset:
    n = len(texts)
    return data.Dataset(name="toy", y=np.array(y), label_names=("ham", "spam"), ids=np.arange(n),
                        groups=np.zeros(n), texts=texts)


@pytest.fixture(scope="module")
def toy_pool() -> data.Dataset:
    return _pool(SPAM + HAM, [1, 1, 1, 0, 0, 0])


@pytest.fixture(scope="module")
def tokenizer(tiny_llama: Path) -> object:
    return load_tokenizer(tiny_llama)


@pytest.fixture(scope="module")
def encoder(tokenizer: object) -> PromptEncoder:
    return PromptEncoder(tokenizer, ["ham", "spam"])


@pytest.fixture(scope="module")
def tiny_expert(tiny_llama: Path) -> Iterator[LLMExpert]:
    config = ExpertConfig(kind="transformers", model=str(tiny_llama), dtype="float32", max_model_len=1024,
                          max_input_tokens=128)
    cost = CostModel(expert_per_call=0.5, expert_per_1k_prompt_tokens=2.0, expert_per_1k_completion_tokens=4.0)
    expert = make_expert(config, cost=cost)
    yield expert
    expert.close()


@pytest.fixture(scope="module")
def mails(spamassassin: data.Dataset) -> data.Dataset:
    return spamassassin.subset(np.arange(0, len(spamassassin), 400))


# --- results -----------------------------------------------------------------------------------

def _result(n: int, p_spam: float) -> ExpertResult:
    return ExpertResult.from_arrays(np.tile([1 - p_spam, p_spam], (n, 1)), prompt_tokens=np.full(n, 10),
                                    completion_tokens=np.ones(n), latency_s=np.zeros(n), cost=np.ones(n),
                                    truncated=np.zeros(n, bool), label_names=("ham", "spam"))


def test_results_concatenate_in_order() -> None:
    joined = ExpertResult.concat([_result(2, 0.9), _result(1, 0.1)])
    assert len(joined) == 3
    assert joined.predictions.tolist() == [1, 1, 0]


def test_result_rejects_probabilities_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"probs must be \(n, 3\)"):
        ExpertResult.from_arrays(np.zeros((2, 2)), prompt_tokens=[1, 1], completion_tokens=[1, 1], latency_s=[0, 0],
                                 cost=[0, 0], truncated=[0, 0], label_names=("a", "b", "c"))


# --- prompts -----------------------------------------------------------------------------------

def test_default_template_is_e_mail_for_ham_spam_message_for_other_texts_and_rows_for_features() -> None:
    assert default_template("text", ["ham", "spam"]) is EMAIL
    assert default_template("text", ["normal", "anomaly"]) is MESSAGE
    assert default_template("features", ["normal", "anomaly"]) is TABULAR


def test_configured_template_replaces_the_question_and_needs_the_text_placeholder() -> None:
    assert default_template("text", ["ham", "spam"], "Spam? {text}").question == "Spam? {text}"
    with pytest.raises(ValueError, match=r"\{text\}"):
        default_template("text", ["ham", "spam"], "Spam?")


def test_label_words_are_joined_for_the_question() -> None:
    assert join_labels(["ham", "spam"]) == "ham or spam"
    assert join_labels(["low", "mid", "high"]) == "low, mid or high"


def test_feature_rows_serialise_with_names_or_numbered_columns() -> None:
    assert serialize_rows(np.array([[1.0, 0.25]]), ["speed", "load"]) == ["speed: 1, load: 0.25"]
    assert serialize_rows(np.array([[3.0, -2.0]])) == ["f1: 3, f2: -2"]


# --- truncation ----------------------------------------------------------------

def test_truncation_keeps_the_original_prefix_and_flags_cut_texts(encoder: PromptEncoder) -> None:
    long_text = "spam " * 200
    kept, cut = encoder.truncate(["ham", long_text], 10)
    assert kept[0] == "ham" and long_text.startswith(kept[1])
    assert encoder.count(kept[1]) <= 10
    assert cut.tolist() == [False, True]


def test_prompts_fit_the_context_and_long_inputs_are_counted(encoder: PromptEncoder) -> None:
    builder = PromptBuilder(encoder, EMAIL, max_input_tokens=64, max_model_len=300)
    prompts, truncated = builder.build(["Cheap meds", "word " * 1000])
    assert truncated.tolist() == [False, True]
    assert max(len(p) for p in prompts) <= 300 - 1


def test_a_prompt_that_overflows_once_assembled_is_cut_further(encoder: PromptEncoder) -> None:
    builder = PromptBuilder(encoder, EMAIL, max_input_tokens=64, max_model_len=300)
    builder.max_model_len = 230  # as if token boundaries had added tokens the budget check did not foresee
    prompts, truncated = builder.build(["word " * 1000])
    assert len(prompts[0]) <= 229 and truncated[0]


def test_a_budget_that_cannot_fit_the_context_is_rejected_at_construction(encoder: PromptEncoder) -> None:
    with pytest.raises(ValueError, match="max_model_len"):
        PromptBuilder(encoder, EMAIL, max_input_tokens=400, max_model_len=300)


def _two_shot_builder(encoder: PromptEncoder, template: PromptTemplate = EMAIL) -> PromptBuilder:
    return PromptBuilder(encoder, template, max_input_tokens=64, max_model_len=1024, shots=2,
                         pool_texts=["first mail", "second mail"], pool_labels=np.array([1, 0]))


def test_shots_are_earlier_chat_turns_answered_by_their_label_closest_last(encoder: PromptEncoder) -> None:
    prompt = encoder.tokenizer.decode(_two_shot_builder(encoder).build(["query"], np.array([[0, 1]]))[0][0])
    assert prompt.index("second mail") < prompt.index("first mail") < prompt.index("query")
    assert "<email>\nsecond mail\n</email><|im_end|>\n<|im_start|>assistant\nham<|im_end|>" in prompt


def test_a_template_with_an_examples_placeholder_gets_the_shots_inline(encoder: PromptEncoder) -> None:
    inline = replace(EMAIL, question="{examples}Spam? {text}")
    system, message = _two_shot_builder(encoder, inline).messages("query", [("second mail", "ham"),
                                                                         ("first mail", "spam")])
    assert system["role"] == "system"
    assert message["content"] == ("Labelled examples:\n\n<email>\nsecond mail\n</email>\nAnswer: ham\n\n"
                                  "<email>\nfirst mail\n</email>\nAnswer: spam\n\nSpam? query")


# --- retrieval and the control expert ------------------------------------------------------------

def test_text_retrieval_puts_the_most_similar_pool_sample_first(toy_pool: data.Dataset) -> None:
    index, weight = NeighbourRetriever(toy_pool, k=3).query([SPAM[1]])
    assert index[0, 0] == 1 and weight[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(weight[0]) <= 0)


def test_feature_retrieval_compares_z_scored_rows() -> None:
    rows = np.array([[0.0, 0.0], [0.0, 1000.0], [1.0, 0.0]])
    pool = data.Dataset(name="rows", y=np.array([0, 1, 0]), label_names=("normal", "anomaly"), ids=np.arange(3),
                        groups=np.zeros(3), features=rows)
    index, _ = NeighbourRetriever(pool, k=1).query(np.array([[0.0, 400.0]]))
    assert index[0, 0] == 0  # 400 is closer to 0 than to 1000 in the second column's own scale


def test_control_probabilities_are_smoothed_and_sum_to_one(toy_pool: data.Dataset) -> None:
    result = KnnVoteExpert(NeighbourRetriever(toy_pool, k=3), ["ham", "spam"]).judge(SPAM[:1] + HAM[:1])
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0)
    assert np.all((result.probs > 0) & (result.probs < 1))
    assert result.predictions.tolist() == [1, 0]


def test_control_spends_no_tokens_and_costs_a_small_tier_call(toy_pool: data.Dataset) -> None:
    control = KnnVoteExpert(NeighbourRetriever(toy_pool, k=2), ["ham", "spam"], cost=CostModel(small_per_call=0.01))
    result = control.judge(SPAM)
    assert result.prompt_tokens.sum() == result.completion_tokens.sum() == 0
    np.testing.assert_allclose(result.cost, 0.01)


def test_control_ranks_spam_above_ham_on_spamassassin(spamassassin: data.Dataset) -> None:
    pool = spamassassin.subset(np.arange(0, len(spamassassin), 15))
    queries = spamassassin.subset(np.arange(5, len(spamassassin), 60))
    control = make_expert(ExpertConfig(kind="knn-vote", shots=4), pool=pool)
    assert roc_auc_score(queries.y, control.judge(queries.texts).probs[:, 1]) > 0.85


def test_control_explains_its_vote_but_answers_no_questions(toy_pool: data.Dataset) -> None:
    control = KnnVoteExpert(NeighbourRetriever(toy_pool, k=3), ["ham", "spam"])
    assert "3 spam" in control.explain(SPAM[0]).text
    with pytest.raises(ExpertError, match="cannot answer questions"):
        control.explain(SPAM[0], question="why?")


# --- factory -------------------------------------------------------------------------------------

def test_few_shot_without_a_pool_fails_clearly() -> None:
    with pytest.raises(ValueError, match="needs a labelled pool"):
        make_expert(ExpertConfig(kind="knn-vote", shots=4))


def test_a_missing_model_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="config.json"):
        make_expert(ExpertConfig(kind="vllm", model=str(tmp_path / "nowhere")))


def test_openai_kind_needs_a_base_url(tiny_llama: Path) -> None:
    with pytest.raises(ValueError, match="base_url"):
        make_expert(ExpertConfig(kind="openai", model=str(tiny_llama)))


def test_importing_the_package_loads_no_engine_library() -> None:
    code = ("import sys, cascade.experts; "
            "print(sorted(m for m in ('vllm', 'torch', 'transformers', 'httpx') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


# --- the transformers backend on the tiny Llama ---------------------------------------------------

def test_probabilities_sum_to_one_with_token_counts_and_cost(tiny_expert: LLMExpert, mails: data.Dataset) -> None:
    result = tiny_expert.judge(mails.texts)
    assert result.probs.shape == (len(mails), 2)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0)
    assert np.all(result.prompt_tokens > 0) and np.all(result.completion_tokens == len(tiny_expert.scorer.branches))
    np.testing.assert_allclose(result.cost, 0.5 + 2.0 * result.prompt_tokens / 1000
                               + 4.0 * result.completion_tokens / 1000)
    assert result.latency_s.sum() > 0


def test_batched_scoring_equals_scoring_one_at_a_time(tiny_llama: Path, tokenizer: object, mails: data.Dataset) -> None:
    encoder = PromptEncoder(tokenizer, ["ham", "spam"])
    prompts, _ = PromptBuilder(encoder, EMAIL, max_input_tokens=128, max_model_len=1024).build(mails.texts[:6])
    engine = TransformersEngine(tiny_llama, tokenizer, dtype="float32", batch_size=6)
    choices = LabelScorer(encoder, ["ham", "spam"]).branches[0].choices
    alone = np.concatenate([engine.score([p], choices) for p in prompts])
    np.testing.assert_allclose(engine.score(prompts, choices), alone, atol=1e-4)


def test_async_judge_equals_judge(tiny_expert: LLMExpert) -> None:
    np.testing.assert_allclose(asyncio.run(tiny_expert.ajudge(SPAM)).probs, tiny_expert.judge(SPAM).probs)


def test_long_inputs_are_truncated_and_counted(tiny_expert: LLMExpert) -> None:
    result = tiny_expert.judge(["short", "spam " * 2000])
    assert result.truncated.tolist() == [False, True]
    assert result.prompt_tokens.max() < 1024


def test_no_samples_give_an_empty_result(tiny_expert: LLMExpert) -> None:
    assert tiny_expert.judge([]).probs.shape == (0, 2)


def test_feature_rows_are_judged_through_their_text(tiny_llama: Path, shuttle: data.Dataset) -> None:
    pool = shuttle.subset(np.arange(0, len(shuttle), 100))
    config = ExpertConfig(kind="transformers", model=str(tiny_llama), dtype="float32", max_model_len=1024,
                          labels=["normal", "anomaly"], shots=2)
    with make_expert(config, pool=pool) as expert:
        result = expert.judge(shuttle.features[:4])
    assert result.probs.shape == (4, 2) and result.label_names == ("normal", "anomaly")


def test_rationale_is_bounded_and_a_follow_up_extends_the_chat(tiny_expert: LLMExpert) -> None:
    first = tiny_expert.explain(SPAM[0], label="spam")
    assert 0 < first.completion_tokens <= tiny_expert.explain_max_tokens
    follow_up = tiny_expert.explain(SPAM[0], question="Which words?", history=first.history)
    assert [m["role"] for m in follow_up.history] == ["user", "assistant", "user", "assistant"]
    assert follow_up.prompt_tokens > first.prompt_tokens


def test_old_follow_ups_are_dropped_when_the_chat_outgrows_the_context(tiny_expert: LLMExpert) -> None:
    long_turn = [{"role": "user", "content": "q " * 300}, {"role": "assistant", "content": "a " * 300}]
    history = [{"role": "user", "content": "Is this spam?"}, {"role": "assistant", "content": "yes"}, *long_turn * 2]
    answer = tiny_expert.explain(SPAM[0], question="And now?", history=history)
    assert answer.truncated
    assert answer.history[:2] == history[:2] and answer.prompt_tokens <= 1024 - tiny_expert.explain_max_tokens
