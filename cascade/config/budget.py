"""The ``budget`` section: one model per budget kind, told apart by ``kind``.

A rate budget has no ``n_grid`` and a cost budget no ``delta``: a field another kind reads is
refused at load (:data:`BUDGET_FIELD_KINDS`). The ``chain`` kind certifies a whole N-tier rule with
abstention (``tiers``, :mod:`cascade.config.tiers`) as one object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from cascade.config.section import Section

_SERVED_RULE = ("serving: 'certified' serves the certified rule as it is; 'track' moves it to hold the target rate "
                "(rate: anywhere, the status says when the certificate stops covering it; cost: only to defer less; "
                "accepted-error / joint / chain: only among the grid rules that passed Learn-then-Test). Default: track "
                "for rate and cost, certified for accepted-error, joint and chain")


class _Budget(Section):
    """What every budget kind reads: the target, the serving controller and the tie rule."""

    kind: Literal["rate", "cost", "accepted-error", "joint", "chain"]
    target: float = Field(0.2, gt=0, description="rate in (0,1], cost per 1k requests, or max error (chain: of the "
                                                 "answered samples)")
    hard_cap: float | None = Field(None, gt=0, le=1, description="serving: max deferral rate over the window")
    served_rule: Literal["certified", "track"] = Field("track", description=_SERVED_RULE)
    window: int = Field(1000, gt=0, description="serving: sliding-window length in requests")
    learning_rate: float = Field(0.05, gt=0, description="serving: online threshold step size")
    tie_seed: int | None = Field(
        0, ge=0, description="seed of the per-sample keys that break ties at the threshold (tuning, harness and "
                             "serving alike); null accepts every tied sample")
    certify_reuse: Literal["refuse", "spend-delta"] = Field(
        "refuse", description="a second, different tuning on a certify part already used to tune: 'refuse' it, or "
                              "'spend-delta' (the certificate states the δ spent on that part over all its tunings, "
                              "Bonferroni; in-expectation tunings are not covered by it)")

    def carried_over(self, kind: str) -> dict[str, Any]:
        """The settings of this budget that a ``kind`` budget also reads (``served_rule`` only when the kind
        stays: each kind has its own default)."""
        return {name: value for name, value in self.model_dump(mode="json").items()
                if name in BUDGETS[kind].model_fields and not (name == "served_rule" and kind != self.kind)}

    def as_kind(self, kind: str, **fields: Any) -> BudgetConfig:
        """This budget as a ``kind`` budget with ``fields`` set (see :meth:`carried_over`).

        >>> RateBudget(target=0.1, hard_cap=0.3).as_kind("cost", target=400.0).hard_cap
        0.3
        """
        return budget_config({**self.carried_over(kind), **fields, "kind": kind})


class RateBudget(_Budget):
    """At most ``target`` of the traffic to the expert (conformal; with ``delta``, a binomial bound)."""

    kind: Literal["rate"] = "rate"
    delta: float | None = Field(None, gt=0, lt=1, description="failure probability; None = in expectation")


class CostBudget(_Budget):
    """At most ``target`` cost units per 1k requests."""

    kind: Literal["cost"] = "cost"
    max_cost_per_call: float | None = Field(
        None, gt=0, description="the most one expert call can cost (default: expert.max_model_len tokens at the "
                                "configured prices)")


class _LearnThenTest(_Budget):
    """A risk of accepted answers, certified by Learn-then-Test over a grid of thresholds."""

    served_rule: Literal["certified", "track"] = Field("certified", description=_SERVED_RULE)
    delta: float | None = Field(None, gt=0, lt=1, description="failure probability of the Learn-then-Test guarantee")
    n_grid: int = Field(20, ge=1, le=1000, description="thresholds Learn-then-Test tests (quantiles of the fit part's "
                                                       "scores)")
    cap_overrides_certificate: bool = Field(
        False, description="allow a hard cap although it makes the small tier answer samples the certified rule "
                           "defers; each such answer is flagged certified: false and counted")


class AcceptedErrorBudget(_LearnThenTest):
    """Accepted (not deferred) answers at most ``target`` wrong, with probability 1-``delta``."""

    kind: Literal["accepted-error"] = "accepted-error"


class JointBudget(_LearnThenTest):
    """Accepted answers at most ``target`` wrong and at most ``max_rate`` deferred, with probability 1-``delta``."""

    kind: Literal["joint"] = "joint"
    max_rate: float | None = Field(None, gt=0, le=1, description="the deferral-rate bound")


class ChainBudget(_Budget):
    """Every tier of the chain and abstention as one rule (one threshold per hop, one to abstain at the last
    tier): answered samples at most ``target`` wrong, at most ``max_abstention`` abstained and at most
    ``max_cost_per_1k`` per 1k requests, all together with probability 1-``delta`` (Learn-then-Test over a
    grid fixed on the fit part, :class:`policies.tuners.chain.ChainTuner`).

    >>> ChainBudget(target=0.05, max_abstention=0.1, delta=0.1).grid_abstention_span
    0.2
    """

    kind: Literal["chain"] = "chain"
    served_rule: Literal["certified", "track"] = Field("certified", description=_SERVED_RULE)
    delta: float | None = Field(None, gt=0, lt=1, description="failure probability of the Learn-then-Test guarantee")
    max_abstention: float | None = Field(
        None, gt=0, le=1, description="the abstention bound: at most this share of requests sent to human review; "
                                      "None: the last tier answers every request that reaches it")
    max_cost_per_1k: float | None = Field(
        None, gt=0, description="the cost bound per 1k requests, in the tiers' cost units (cost.small_per_call and each "
                                "tier's cost); None: not certified (the cheapest rule that passes is still served)")
    error: Literal["conditional", "joint"] = Field(
        "conditional", description="'conditional': wrong among the answered requests; 'joint': wrong answers per request")
    method: Literal["fixed-sequence", "bonferroni"] = Field(
        "fixed-sequence", description="family-wise error control over the grid: fixed-sequence testing along an order "
                                      "fixed on the fit part, or Bonferroni")
    n_per_tier: int = Field(5, ge=2, le=50, description="thresholds per hop (fit-part score quantiles, both ends "
                                                        "included); the grid holds at most n_per_tier ** tiers rules")
    abstention_span: float | None = Field(
        None, ge=0, le=1, description="the grid's abstention thresholds reach about this share abstained on the fit "
                                      "part; None: twice max_abstention (at most 1), 0 without max_abstention")
    max_request_cost: float | None = Field(
        None, gt=0, description="cost control: the most one request can cost through every tier; None: "
                                "cost.small_per_call plus each tier's dearest call (per-token prices at the tier's "
                                "max_model_len)")

    @property
    def grid_abstention_span(self) -> float:
        """The abstention span the grid is built with (see ``abstention_span``)."""
        if self.abstention_span is not None:
            return self.abstention_span
        return 0.0 if self.max_abstention is None else min(1.0, 2 * self.max_abstention)


BudgetConfig = Annotated[RateBudget | CostBudget | AcceptedErrorBudget | JointBudget | ChainBudget,
                         Field(discriminator="kind")]
"""A budget: one model per kind, told apart by ``kind`` (``rate`` when left out)."""
BUDGETS: dict[str, type[_Budget]] = {"rate": RateBudget, "cost": CostBudget, "accepted-error": AcceptedErrorBudget,
                                     "joint": JointBudget, "chain": ChainBudget}
BUDGET_FIELD_KINDS: dict[str, tuple[str, ...]] = {
    name: tuple(kind for kind, model in BUDGETS.items() if name in model.model_fields)
    for name in dict.fromkeys(name for model in BUDGETS.values() for name in model.model_fields)
    if not all(name in model.model_fields for model in BUDGETS.values())}
"""Budget fields only some kinds read -> those kinds."""


def budget_config(raw: dict[str, Any]) -> BudgetConfig:
    """Validate a budget section (``kind`` picks the model; ``rate`` when left out).

    >>> budget_config({"kind": "joint", "target": 0.02, "max_rate": 0.3, "delta": 0.1}).max_rate
    0.3
    """
    return _BUDGET_ADAPTER.validate_python({"kind": "rate", **raw})


_BUDGET_ADAPTER: TypeAdapter[BudgetConfig] = TypeAdapter(BudgetConfig)


def is_other_kinds_default(name: str, value: Any) -> bool:
    """Whether budget field ``name`` belongs to some kind and ``value`` is that kind's default."""
    kinds = BUDGET_FIELD_KINDS.get(name, ())
    return bool(kinds) and all(value == BUDGETS[kind].model_fields[name].default for kind in kinds)
