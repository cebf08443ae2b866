"""The ``tiers`` section: the ordered tiers after the small one, cheapest first.

Each tier is an :class:`~cascade.config.ExpertConfig` (how it judges) with a ``name`` and what one call
costs, in the unit of ``cost.small_per_call`` and of the budget. A config without ``tiers`` has one
tier, its ``expert`` priced by ``cost`` (:func:`served_tiers`): the two-tier cascade is the one-hop
case of the same schema. With ``tiers``, ``expert`` is the last tier (filled in when left out), the
budget is a ``chain`` budget (:class:`~cascade.config.budget.ChainBudget`) and the whole rule, one
threshold per hop and one to abstain at the last tier, is certified as one object.

.. code-block:: yaml

    tiers:
      - name: vote
        expert: {kind: knn-vote, labels: [ham, spam], shots: 6}
        cost_per_call: 0.02
      - name: llm
        expert: {kind: vllm, model: smollm2-135m-instruct, labels: [ham, spam], shots: 6}
        cost_per_call: 0.0
        cost_per_1k_prompt_tokens: 0.5
        cost_per_1k_completion_tokens: 1.5
    budget: {kind: chain, target: 0.05, max_abstention: 0.1, max_cost_per_1k: 60, delta: 0.1}

>>> from cascade.config import CascadeConfig
>>> [(tier.name, tier.cost_per_call) for tier in served_tiers(CascadeConfig.model_validate(
...     {"dataset": {"name": "spamassassin"}, "expert": {"kind": "knn-vote", "shots": 4}}))]
[('expert', 1.0)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from cascade.config.section import Section
from cascade.types import CostModel

if TYPE_CHECKING:
    from cascade.config import CascadeConfig, ExpertConfig

SMALL_TIER = "small"
"""the small tier's name in results, verdicts and metrics; no tier in ``tiers`` may take it"""
TOKEN_PRICED = ("vllm", "openai", "transformers")
"""expert kinds that spend tokens (the others cost their ``cost_per_call`` only)"""


class TierConfig(Section):
    """One tier after the small one: its name, its expert and what one call to it costs."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=40,
                      description="the tier's name in results, verdicts and metrics (lower case, e.g. 'vote', 'llm')")
    expert: ExpertConfig = Field(description="how the tier judges: any expert kind (vllm, openai, transformers, "
                                             "knn-vote, cnn) with its fields")
    cost_per_call: float | None = Field(
        None, ge=0, description="cost units of one call (the budget's unit); None: not stated (a chain budget "
                                "refuses it unless the tier is priced per token)")
    cost_per_1k_prompt_tokens: float = Field(0.0, ge=0, description="LLM kinds: cost units per 1k prompt tokens")
    cost_per_1k_completion_tokens: float = Field(0.0, ge=0, description="LLM kinds: cost units per 1k completion tokens")

    @property
    def priced(self) -> bool:
        """Whether the config says what a call to this tier costs."""
        return self.cost_per_call is not None or (self.expert.kind in TOKEN_PRICED and (
            self.cost_per_1k_prompt_tokens > 0 or self.cost_per_1k_completion_tokens > 0))

    def cost_model(self, small_per_call: float = 0.0) -> CostModel:
        """This tier's prices as the :class:`~cascade.types.CostModel` its expert bills calls with.

        >>> TierConfig(name="vote", expert={"kind": "knn-vote", "shots": 4}, cost_per_call=0.02).cost_model().expert_per_call
        0.02
        """
        return CostModel(small_per_call=small_per_call, expert_per_call=self.cost_per_call or 0.0,
                         expert_per_1k_prompt_tokens=self.cost_per_1k_prompt_tokens,
                         expert_per_1k_completion_tokens=self.cost_per_1k_completion_tokens)

    def call_cost(self, prompt_tokens: Any = 0, completion_tokens: Any = 0) -> Any:
        """What calls to this tier cost, whatever its kind: ``cost_per_call`` plus the tokens at the tier's prices
        (scalars or numpy arrays of token counts).

        >>> TierConfig(name="vote", expert={"kind": "knn-vote", "shots": 4}, cost_per_call=0.02).call_cost()
        0.02
        """
        return self.cost_model().expert_cost(prompt_tokens, completion_tokens)

    def max_call_cost(self) -> float:
        """The most one call can cost: ``cost_per_call``, plus, for LLM kinds, ``expert.max_model_len`` tokens at the
        dearer per-token price."""
        if self.expert.kind not in TOKEN_PRICED:
            return self.cost_per_call or 0.0
        return self.cost_model().max_expert_cost(self.expert.max_model_len)


def served_tiers(config: CascadeConfig) -> list[TierConfig]:
    """The tiers after the small one, cheapest first: ``config.tiers``, or the one tier ``expert`` priced by
    ``config.cost`` (named ``expert``)."""
    if config.tiers is not None:
        return list(config.tiers)
    cost = config.cost
    return [TierConfig(name="expert", expert=config.expert, cost_per_call=cost.expert_per_call,
                       cost_per_1k_prompt_tokens=cost.expert_per_1k_prompt_tokens,
                       cost_per_1k_completion_tokens=cost.expert_per_1k_completion_tokens)]


def tier_names(config: CascadeConfig) -> list[str]:
    """Every tier's name in order, the small tier's first."""
    return [SMALL_TIER, *(tier.name for tier in served_tiers(config))]


def max_request_cost(config: CascadeConfig) -> float:
    """The most one request can cost through every tier: the chain budget's ``max_request_cost``, or
    ``cost.small_per_call`` plus each tier's dearest call."""
    stated = getattr(config.budget, "max_request_cost", None)
    if stated is not None:
        return float(stated)
    return config.cost.small_per_call + sum(tier.max_call_cost() for tier in served_tiers(config))


def expert_from_tiers(raw: Any) -> Any:
    """A raw config with ``tiers`` and no ``expert``: the last tier's expert as ``expert`` (what the two-tier
    commands read), so a config written by ``to_yaml`` carries both and loads back."""
    if not isinstance(raw, dict) or "expert" in raw or not isinstance(raw.get("tiers"), list) or not raw["tiers"]:
        return raw
    last = raw["tiers"][-1]
    if not isinstance(last, dict) or "expert" not in last:
        return raw
    return {**raw, "expert": last["expert"]}
