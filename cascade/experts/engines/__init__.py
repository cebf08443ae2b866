"""Engine adapters behind :class:`cascade.experts.LLMExpert`: vLLM in-process, an OpenAI-compatible
server, and plain transformers. Each imports its heavy library only when it starts."""

from cascade.experts.engines.base import Engine, Generation

__all__ = ["Engine", "Generation"]
