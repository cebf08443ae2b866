"""Build the expert an :class:`~cascade.config.ExpertConfig` describes.

>>> from cascade.config import ExpertConfig
>>> import cascade.data
>>> train = cascade.data.load("spamassassin", split="train", seed=0)                     # doctest: +SKIP
>>> control = make_expert(ExpertConfig(kind="knn-vote", shots=4), pool=train)           # doctest: +SKIP
>>> llm = make_expert(ExpertConfig(kind="vllm", shots=4), pool=train)                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os

import numpy as np

from cascade.config import ExpertConfig
from cascade.data import Dataset
from cascade.experts.dtype import resolve_dtype
from cascade.experts.knn_vote import KnnVoteExpert
from cascade.experts.engines.base import Engine
from cascade.experts.labels import SPELLINGS
from cascade.experts.llm import LLMExpert
from cascade.experts.protocol import Expert
from cascade.experts.retrieval import NeighbourRetriever
from cascade.types import CostModel

_log = logging.getLogger(__name__)


def make_expert(config: ExpertConfig, cost: CostModel | None = None, pool: Dataset | None = None) -> Expert:
    """The expert for ``config.kind``; ``pool`` holds the labelled examples for retrieval.

    ``vllm``, ``openai`` and ``transformers`` are LLM experts (few-shot when ``config.shots`` >= 1,
    which needs a ``pool``); ``knn-vote`` is the no-LLM control and needs a ``pool`` and shots >= 1;
    ``cnn`` is a :class:`~cascade.detectors.image.PixelCNN` trained on the ``pool``'s images (cached,
    see :func:`cascade.experts.image.fitted_cnn`; ``config.model`` is only a name for it; ``channels``,
    ``hidden_units`` and ``epochs`` size and train it).
    ``config.pool_groups`` keeps only the pool samples of those groups (a specialist expert).
    Engines start on first use (or with ``expert.start()`` / ``await expert.astart()``).
    """
    if config.pool_groups is not None and pool is not None:
        pool = pool.subset(np.flatnonzero(np.isin(pool.groups, config.pool_groups)))
        if len(pool) == 0:
            raise ValueError(f"expert.pool_groups {config.pool_groups} keeps no training sample")
    if config.kind == "cnn":
        from cascade.experts.image import CnnExpert, fitted_cnn

        if pool is None:
            raise ValueError("expert kind 'cnn' trains a CNN on a labelled pool of images (e.g. the train split)")
        cnn = fitted_cnn(pool, channels=config.channels, hidden_units=config.hidden_units, epochs=config.epochs)
        return CnnExpert(cnn, config.labels, cost=cost)
    if config.shots and pool is None:
        raise ValueError(f"expert.shots={config.shots} needs a labelled pool (e.g. the train split)")
    retriever = NeighbourRetriever(pool, k=config.shots) if config.shots and pool is not None else None
    if config.kind == "knn-vote":
        if retriever is None:
            raise ValueError("expert kind 'knn-vote' needs a labelled pool and expert.shots >= 1")
        return KnnVoteExpert(retriever, config.labels, smoothing=config.vote_smoothing, cost=cost)
    from cascade.experts.tokens import load_tokenizer
    from cascade.models import path

    model_dir = path(config.model)
    tokenizer = load_tokenizer(model_dir)
    return LLMExpert(
        _engine(config, model_dir, tokenizer), tokenizer, config.labels, template=config.template,
        shots=config.shots, retriever=retriever, max_input_tokens=config.max_input_tokens,
        shot_max_tokens=config.shot_max_tokens, max_model_len=config.max_model_len,
        explain_max_tokens=config.explain_max_tokens,
        feature_names=pool.feature_names if pool is not None else None, cost=cost,
    )


def _engine(config: ExpertConfig, model_dir: object, tokenizer: object) -> Engine:
    batch_size = config.batch_size or config.max_num_seqs
    dtype = resolve_dtype(config.dtype)  # 'auto': bfloat16 only where the hardware computes it natively
    if dtype != config.dtype:
        _log.info("expert.dtype auto resolved to %s on this machine", dtype)
    if config.kind == "vllm":
        from cascade.experts.engines.vllm_local import VllmEngine

        return VllmEngine(model_dir, dtype=dtype, max_model_len=config.max_model_len,  # type: ignore[arg-type]
                          kv_cache_gib=config.kv_cache_gib, max_num_seqs=config.max_num_seqs,
                          max_choices=len(SPELLINGS) * len(config.labels), enforce_eager=config.enforce_eager,
                          prefix_caching=config.prefix_caching)
    if config.kind == "openai":
        from cascade.experts.engines.openai_http import OpenAIEngine

        if not config.base_url:
            raise ValueError("expert kind 'openai' needs expert.base_url (e.g. http://127.0.0.1:8000)")
        return OpenAIEngine(config.base_url, max_model_len=config.max_model_len, model=config.served_model_name,
                            timeout_s=config.timeout_s, max_retries=config.max_retries, batch_size=batch_size,
                            backoff_s=config.retry_backoff_s, api_key=_api_key(config))
    from cascade.experts.engines.hf_transformers import TransformersEngine

    return TransformersEngine(model_dir, tokenizer, dtype=dtype, batch_size=batch_size)


def _api_key(config: ExpertConfig) -> str | None:
    """The bearer token from the environment variable ``expert.api_key_env`` names (None when unset in config)."""
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ValueError(f"expert.api_key_env names the environment variable {config.api_key_env}, which is not set "
                         "or empty: export it with the server's API key, or remove expert.api_key_env")
    return key
