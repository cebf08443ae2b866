"""The router's Prometheus series, through Ray's metrics API; the per-request ones carry a ``tenant`` tag.

Ray exports them from each node's metrics agent with a ``ray_`` prefix and the Serve tags
(application, deployment, replica), e.g. ``ray_cascade_deferrals_total``. Outside a Ray worker
the calls are no-ops, so the HTTP layer runs unchanged in unit tests.

>>> metrics = CascadeMetrics()
>>> metrics.rejected.inc(tags={"status": "422"})
"""

from __future__ import annotations

from typing import Any

import numpy as np

LATENCY_BOUNDARIES_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


class CascadeMetrics:
    """Requests, deferrals, realised deferral rate, cost, per-tier latency, fallbacks, rejections."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.requests = Counter("cascade_requests_total", "HTTP requests answered, by route and status code",
                                tag_keys=("path", "status"))
        self.samples = Counter("cascade_samples_total", "samples answered, by the tier that answered",
                               tag_keys=("tier", "tenant"))
        self.deferrals = Counter("cascade_deferrals_total", "samples the policy sent to the expert",
                                 tag_keys=("tenant",))
        self.deferral_rate = Gauge("cascade_deferral_rate", "realised deferral rate over the controller window",
                                   tag_keys=("tenant",))
        self.threshold = Gauge("cascade_threshold", "deferral threshold the controller holds now", tag_keys=("tenant",))
        self.cost = Counter("cascade_cost_units_total", "cost units spent, by tier", tag_keys=("tier", "tenant"))
        self.latency = Histogram("cascade_latency_ms", "latency per tier (small, expert) and end to end (total)",
                                 boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("tier", "tenant"))
        self.fallbacks = Counter("cascade_fallbacks_total",
                                 "deferred samples answered by the small tier because the expert failed",
                                 tag_keys=("reason", "tenant"))
        self.forced = Counter("cascade_forced_accepts_total",
                              "samples the rule deferred that the hard cap or a missing lease allowance left to the "
                              "small tier", tag_keys=("tenant",))
        self.uncertified = Counter("cascade_uncertified_answers_total",
                                   "answers the served certificate does not cover (verdict certified: false)",
                                   tag_keys=("tenant",))
        for metric in (self.samples, self.deferrals, self.deferral_rate, self.threshold, self.cost, self.latency,
                       self.fallbacks, self.forced, self.uncertified):
            metric.set_default_tags({"tenant": "-"})  # "-": an app without tenants (or a call with none)
        self.rejected = Counter("cascade_rejected_inputs_total", "requests refused as bad input, by status code",
                                tag_keys=("status",))

    def record_batch(self, defer: Any, forced: Any, state: dict[str, Any], small_cost: float,
                     tenant: str | None) -> None:
        """Known once per batch and tenant: deferrals, forced acceptances, small-tier cost, the budget's state."""
        tags = {"tenant": _tag(tenant)}
        deferrals, forced_count = int(defer.sum()), int(forced.sum())
        if deferrals:
            self.deferrals.inc(deferrals, tags=tags)
        if forced_count:
            self.forced.inc(forced_count, tags=tags)
            self.fallbacks.inc(forced_count, tags={"reason": "forced", **tags})
        if small_cost > 0:
            self.cost.inc(small_cost * len(defer), tags={"tier": "small", **tags})
        if state:  # a replica's shared budget has no state before its first lease
            self.deferral_rate.set(state["realised_rate"], tags=tags)
            self.threshold.set(state["threshold"], tags=tags)

    def record_answers(self, tiers: Any, sources: Any, expert_cost: float, total_ms: float, tenant: str | None) -> None:
        """Known once a request is answered: samples per answering tier (``abstained``: none answered), expert
        cost, end-to-end latency."""
        tags = {"tenant": _tag(tenant)}
        names, counts = np.unique(np.where(sources == "abstained", "abstained", tiers).astype(str), return_counts=True)
        for tier, answered in zip(names, counts):
            self.samples.inc(int(answered), tags={"tier": str(tier), **tags})
        if expert_cost > 0:
            self.cost.inc(expert_cost, tags={"tier": "expert", **tags})
        self.latency.observe(total_ms, tags={"tier": "total", **tags})


def _tag(tenant: str | None) -> str:
    """A metric's tenant label: the tenant's name, or ``-`` for an app without tenants."""
    return "-" if tenant is None else tenant
