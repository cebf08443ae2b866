"""Expert settings beyond ``ExpertConfig``'s fields, with their defaults.

Each value is read from the config when it has a field of that name, else the default here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cascade.config import ExpertConfig


@dataclass(frozen=True)
class ExpertSettings:
    shot_max_tokens: int = 128
    """each retrieved example is cut to this many tokens"""
    explain_max_tokens: int = 96
    """bound on a rationale's length"""
    batch_size: int | None = None
    """prompts per transformers forward pass / per HTTP request (None: max_num_seqs)"""
    served_model_name: str | None = None
    """the server's model id for kind 'openai' (None: the first model it lists)"""
    api_key: str | None = None
    """bearer token for kind 'openai'"""
    retry_backoff_s: float = 0.5
    """first back-off between HTTP retries (doubles each retry)"""
    enforce_eager: bool = True
    """vLLM without CUDA graphs / compilation (required on CPU)"""
    vote_smoothing: float = 0.5
    """pseudo-count per label in the knn-vote control"""

    @classmethod
    def from_config(cls, config: ExpertConfig) -> ExpertSettings:
        defaults = cls()
        return cls(**{name: getattr(config, name, getattr(defaults, name)) for name in cls.__dataclass_fields__})
