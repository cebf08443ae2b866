"""The large tier: LLM experts (vLLM in-process or behind an OpenAI-compatible server, or plain
transformers) that score label tokens, plus a no-LLM control that votes retrieved neighbours.

Importing this package is cheap; vLLM, torch, transformers and httpx load inside the engines.

>>> from cascade.config import ExpertConfig
>>> from cascade.experts import make_expert
>>> expert = make_expert(ExpertConfig(kind="vllm", model="smollm2-135m-instruct"))  # doctest: +SKIP
>>> result = expert.judge(["Cheap meds, click now", "Minutes of Monday's meeting"])  # doctest: +SKIP
>>> result.probs.shape, result.prompt_tokens, result.cost                            # doctest: +SKIP
((2, 2), array([61, 63]), array([1., 1.]))
"""

from cascade.experts.knn_vote import KnnVoteExpert
from cascade.experts.engines.vllm_local import vllm_env
from cascade.experts.errors import ExpertError, ExpertUnavailable
from cascade.experts.factory import make_expert
from cascade.experts.llm import LLMExpert
from cascade.experts.prompts import PromptTemplate, default_template, serialize_rows
from cascade.experts.protocol import Expert, ExpertInput
from cascade.experts.result import ExpertResult, Explanation
from cascade.experts.retrieval import NeighbourRetriever

__all__ = [
    "Expert", "ExpertError", "ExpertInput", "ExpertResult", "ExpertUnavailable", "Explanation",
    "KnnVoteExpert", "LLMExpert", "NeighbourRetriever", "PromptTemplate", "default_template", "make_expert",
    "serialize_rows", "vllm_env",
]
