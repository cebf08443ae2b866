"""Models behind one registry: ``cascade.models.fetch(name)`` and ``cascade.models.path(name)``."""

from cascade.models.registry import MINILM, MODELS, SMOLLM2, ModelMissing, fetch, path, summary
from cascade.models.tiny import build_tiny_llama

__all__ = ["MINILM", "MODELS", "SMOLLM2", "ModelMissing", "build_tiny_llama", "fetch", "path", "summary"]
