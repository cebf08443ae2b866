"""A tiny random Llama with a real byte-level BPE tokenizer, for fast tests of the vLLM path.

Two layers, hidden size 128, two heads (head_dim 64: vLLM's CPU attention needs >= 64). The
weights are random, so its answers are meaningless, but loading, batching, log-probabilities
and serving all run through the real engine code.

>>> folder = build_tiny_llama("/tmp/tiny-llama")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

# Words the tokenizer must keep whole, so label words score as single tokens.
_WORDS = ("ham", "spam", "normal", "anomaly", "yes", "no", "Answer", "Message", "Subject", "Example")
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(folder: str | Path, seed: int = 0, vocab_size: int = 1024) -> Path:
    """Write a tiny random Llama (safetensors) and its tokenizer to ``folder``; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    special = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [f"{w} {w.lower()} {w}: {w.lower()}\n" for w in _WORDS] * 200
    corpus += ["The quick brown fox jumps over the lazy dog. Is this message spam or ham?\n"] * 50
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
