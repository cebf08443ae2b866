"""The router's Prometheus series, through Ray's metrics API.

Ray exports them from each node's metrics agent with a ``ray_`` prefix and the Serve tags
(application, deployment, replica), e.g. ``ray_cascade_deferrals_total``. Outside a Ray worker
the calls are no-ops, so the HTTP layer runs unchanged in unit tests.

>>> metrics = CascadeMetrics()
>>> metrics.rejected.inc(tags={"status": "422"})
"""

from __future__ import annotations

LATENCY_BOUNDARIES_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


class CascadeMetrics:
    """Requests, deferrals, realised deferral rate, cost, per-tier latency, fallbacks, rejections."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.requests = Counter("cascade_requests_total", "HTTP requests answered, by route and status code",
                                tag_keys=("path", "status"))
        self.samples = Counter("cascade_samples_total", "samples answered, by the tier that answered",
                               tag_keys=("tier",))
        self.deferrals = Counter("cascade_deferrals_total", "samples the policy sent to the expert")
        self.deferral_rate = Gauge("cascade_deferral_rate", "realised deferral rate over the controller window")
        self.threshold = Gauge("cascade_threshold", "deferral threshold the controller holds now")
        self.cost = Counter("cascade_cost_units_total", "cost units spent, by tier", tag_keys=("tier",))
        self.latency = Histogram("cascade_latency_ms", "latency per tier (small, expert) and end to end (total)",
                                 boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("tier",))
        self.fallbacks = Counter("cascade_fallbacks_total",
                                 "deferred samples answered by the small tier because the expert failed",
                                 tag_keys=("reason",))
        self.forced = Counter("cascade_forced_accepts_total",
                              "samples the rule deferred that the hard cap or a missing lease allowance left to the "
                              "small tier")
        self.uncertified = Counter("cascade_uncertified_answers_total",
                                   "answers the served certificate does not cover (verdict certified: false)")
        self.rejected = Counter("cascade_rejected_inputs_total", "requests refused as bad input, by status code",
                                tag_keys=("status",))
