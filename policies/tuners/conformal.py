"""Conformal risk control tuners: deferral rate and cost per 1k requests.

Split-conformal risk control (Angelopoulos et al., "Conformal Risk Control", 2022) on a bounded,
monotone loss: the threshold keeps ``(Σ loss + B) / (n + 1) ≤ target`` on the certify set,
which bounds the expected loss on a new exchangeable request. The expectation is taken over the
draw of the certify part *and* the new request: it is a bound on average over certify draws, not
for the one threshold deployed, which may exceed the target on a given draw. The high-probability
rate tuner uses the Clopper-Pearson bound instead (a fixed-sequence Learn-then-Test over all
thresholds), which holds for the deployed threshold with probability ≥ 1-δ over the draw.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from policies.tuners.base import EPS, BudgetTuner, Solution, check_rate
from policies.tuners.bounds import clopper_pearson_upper
from policies.tuners.risks import RiskTable


class RateTuner(BudgetTuner):
    """Deferral rate ≤ ``target``: in expectation (``delta=None``) or with probability ≥ 1-δ.

    In expectation it is the split-conformal quantile (conformal risk control on the 0/1 deferral
    loss): at most ``⌊(n+1)β⌋ - 1`` certify samples lie above the threshold, so
    ``E[defer_rate] ≤ β`` with the expectation over the certify draw and a new request; the
    threshold picked on one draw may defer more than ``β``. With ``delta`` it keeps the
    Clopper-Pearson upper bound of the deferral rate at or below the target, which bounds that
    chance by ``δ``. A certify
    part too small to certify even one deferral (``β < 1/(n+1)``; with ``δ``: ``(1-β)^n > δ``) is
    refused, naming the smallest target it can certify and the ``n`` the target needs.

    >>> import numpy as np
    >>> RateTuner(target=0.1, delta=0.05).fit(np.linspace(0, 1, 1000)).certificate_.bound["defer_rate"] <= 0.1
    True
    """

    kind = "rate"

    def __init__(self, target: float = 0.2, delta: float | None = None) -> None:
        self.target = target
        self.delta = delta

    @property
    def targets(self) -> dict[str, float]:
        return {"defer_rate": float(self.target)}

    def _check_params(self) -> None:
        super()._check_params()
        check_rate("target", self.target)

    def _solve(self, data: RiskTable) -> Solution:
        n = data.n
        if self.delta is None:
            allowed = math.floor((n + 1) * self.target - 1 + EPS)
        else:
            allowed = int(np.count_nonzero(binom.cdf(np.arange(n + 1), n, self.target) <= self.delta)) - 1
        position = np.full(data.m, n - 1 - min(max(allowed, -1), n))
        deferred = n - data.at(data.accepted, position)
        if self.delta is None:
            bound = (deferred + 1) / (n + 1)
            smallest = 1.0 / (n + 1)
        else:
            bound = clopper_pearson_upper(deferred, n, self.delta)
            smallest = 1.0 - self.delta ** (1.0 / n)
        best = {"defer_rate": np.full(data.m, smallest)}
        return Solution(position, {"defer_rate": bound}, best, feasible=np.full(data.m, allowed >= 0))

    def _method(self) -> str:
        return "conformal risk control" if self.delta is None else "Clopper-Pearson upper bound"

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        if self.delta is None:
            needed = math.ceil(1.0 / self.target - 1.0 - EPS)
        else:
            needed = math.ceil(math.log(self.delta) / math.log1p(-self.target) - EPS)
        guarantee = "in expectation" if self.delta is None else f"with probability ≥ {1 - self.delta:g}"
        return (f"a deferral rate of {self.target} cannot be certified {guarantee} on a certify part of n={n}: "
                f"it needs n ≥ {needed}; with n={n} the smallest certifiable rate is {best['defer_rate']:.4g}")

    def _statement(self) -> str:
        if self.delta is None:
            return (f"E[defer_rate] ≤ {self.target} on new requests exchangeable with the certify part, the "
                    f"expectation taken over the draw of the certify part and a new request; a single deployed "
                    f"threshold may exceed {self.target} on a given draw")
        return f"P(defer_rate > {self.target}) ≤ {self.delta} over the draw of the certify part"


class CostTuner(BudgetTuner):
    """Expected cost per 1k requests ≤ ``target_per_1k`` (conformal risk control).

    The expectation is over the draw of the certify part and a new request: the threshold picked
    on one draw may cost more than the target per 1k.

    The per-request cost is ``small_cost + expert_cost · [deferred]``; conformal risk control
    needs a bound on it fixed before the data are seen, ``max_expert_cost``: the most one expert
    call can cost (e.g. ``max_model_len`` tokens at the configured prices, see
    :meth:`cascade.types.CostModel.max_expert_cost`). The certificate states it.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tuner = CostTuner(target_per_1k=150.0, max_expert_cost=1.0).fit(rng.random(999), expert_cost=np.ones(999))
    >>> tuner.certificate_.bound["cost_per_1k"] <= 150.0
    True
    """

    kind = "cost"
    needs = ("expert_cost",)

    def __init__(
        self, target_per_1k: float = 400.0, small_cost: float = 0.0, max_expert_cost: float | None = None
    ) -> None:
        self.target_per_1k = target_per_1k
        self.small_cost = small_cost
        self.max_expert_cost = max_expert_cost

    @property
    def targets(self) -> dict[str, float]:
        return {"cost_per_1k": float(self.target_per_1k)}

    def _check_params(self) -> None:
        super()._check_params()
        if self.target_per_1k <= 0 or self.small_cost < 0:
            raise ValueError("target_per_1k must be positive and small_cost non-negative")
        if self.max_expert_cost is None or not self.max_expert_cost > 0:
            raise ValueError(f"CostTuner needs max_expert_cost > 0, the most one expert call can cost, fixed before "
                             f"the data are seen (e.g. max_model_len tokens at the configured prices); got "
                             f"{self.max_expert_cost}")

    def _cost_per_request(self) -> float:
        return float(self.small_cost)

    def _solve(self, data: RiskTable) -> Solution:
        assert data.cost_descending is not None
        n = data.n
        budget = self.target_per_1k / 1000.0 - self.small_cost
        dearest = float(data.cost_descending.max())
        if dearest > float(self.max_expert_cost):  # type: ignore[arg-type]
            raise ValueError(f"an expert call on the certify part cost {dearest:.4g}, which exceeds "
                             f"max_expert_cost={self.max_expert_cost}: the declared maximum is not a bound")
        worst = np.full(data.m, float(self.max_expert_cost))  # type: ignore[arg-type]
        spent = np.hstack([np.zeros((data.m, 1)), np.cumsum(data.cost_descending, axis=1)])
        limit = (n + 1) * budget - worst
        allowed = np.count_nonzero(spent <= limit[:, None] + EPS, axis=1) - 1
        position = n - 1 - allowed
        deferred = (n - data.at(data.accepted, position)).astype(int)
        deferred_cost = np.take_along_axis(spent, deferred[:, None], axis=1)[:, 0]
        bound = np.where(position == n, self.small_cost, self.small_cost + (deferred_cost + worst) / (n + 1))
        best = {"cost_per_1k": np.full(data.m, 1000.0 * self.small_cost)}
        return Solution(position, {"cost_per_1k": 1000.0 * bound}, best, feasible=np.full(data.m, budget >= 0))

    def _method(self) -> str:
        return "conformal risk control"

    def _statement(self) -> str:
        return (f"E[cost_per_1k] ≤ {self.target_per_1k} on new requests exchangeable with the certify part, "
                f"given that one expert call costs at most {self.max_expert_cost:.6g}, the expectation taken over "
                f"the draw of the certify part and a new request; a single deployed threshold may exceed "
                f"{self.target_per_1k} on a given draw")

    def _infeasible(self, n: int, best: dict[str, float]) -> str:
        return (
            f"cost per 1k ≤ {self.target_per_1k} is below the small tier's own cost: the best achievable is "
            f"{best['cost_per_1k']:.4g} per 1k (never deferring)"
        )
