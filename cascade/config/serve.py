"""The ``serve`` section: replicas, batching, limits, the breaker, control access, the shared budget, and the
production feedback loop (decision log, feedback, monitors)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from cascade.config.section import Section

class BreakerConfig(Section):
    """The circuit breaker in front of the expert: fail fast while the expert is down."""

    failures: int = Field(3, gt=0, description="consecutive expert failures or timeouts that open the circuit")
    cooldown_s: float = Field(5.0, gt=0, description="an open circuit lets one probe through after this long")


class ControlConfig(Section):
    """Who may change the running app (``PUT /v1/budget``): holders of a bearer token."""

    token_env: str = Field("CASCADE_API_TOKEN", min_length=1, description="environment variable holding the token")
    token_file: str | None = Field(None, description="file holding the token (read when the app is built)")
    allow_unauthenticated: bool = Field(
        False, description="local use only: accept mutations without a token when none is configured")


class SharedBudgetConfig(Section):
    """One budget for the app: router replicas lease deferral allowance from one holder."""

    lease_deferrals: int = Field(16, gt=0, description="deferrals a router replica may make per lease")
    lease_ttl_s: float = Field(5.0, gt=0, description="an unreported lease expires, its allowance returned, after this")
    num_cpus: float = Field(0.05, gt=0, description="CPUs of the holder's one replica")
    max_queued_requests: int = Field(256, gt=0, description="exchanges queued at a router before failing (retried)")


class FeedbackConfig(ControlConfig):
    """Who may send true labels (``POST /v1/feedback``): holders of a bearer token of their own."""

    token_env: str = Field("CASCADE_FEEDBACK_TOKEN", min_length=1,
                           description="environment variable holding the feedback token")
    max_items: int = Field(1000, gt=0, description="labels one feedback request may carry")


class DecisionLogConfig(Section):
    """Where every served decision is written (off the request path) for feedback and the monitors."""

    enabled: bool = Field(True, description="log every decision; off: no decision ids, no feedback, no monitors")
    url: str | None = Field(None, description="an SQLAlchemy URL (e.g. postgresql+psycopg://...) for a database the "
                                              "whole cluster shares; None: an SQLite file under $CASCADE_HOME")
    url_env: str | None = Field(None, description="environment variable holding the URL (keeps a password out of "
                                                  "the YAML); wins over url when set")
    retention_days: float | None = Field(30.0, gt=0, description="decisions older than this are deleted (None: kept)")
    max_rows: int | None = Field(1_000_000, gt=0, description="at most this many decisions kept, newest first")
    batch_size: int = Field(256, gt=0, description="decisions per insert")
    flush_interval_s: float = Field(0.5, gt=0, description="a decision waits at most this long to be written")
    max_queue: int = Field(100_000, gt=0, description="decisions waiting for the writer; beyond, the oldest is "
                                                      "dropped and counted")


class MonitorConfig(Section):
    """Anytime-valid monitors of the served certificate (:mod:`policies.watch`) and what an alarm does."""

    enabled: bool = Field(True, description="watch the certificate (needs the decision log)")
    delta: float = Field(0.05, gt=0, lt=1, description="δ_monitor: the chance that any monitor raises a false alarm "
                                                       "while the certificate holds, split evenly among the monitors")
    action: Literal["alert", "fallback", "recertify"] = Field(
        "alert", description="on alarm: alert (report only), fallback (the most conservative certified rule), or "
                             "recertify (re-tune on fresh logged data, then swap the rule)")
    interval_s: float = Field(1.0, gt=0, description="how often the monitors read the decision log")
    settle_s: float = Field(2.0, ge=0, description="decisions younger than this are read on a later pass (writers "
                                                   "flush off the request path)")
    jump: float = Field(0.01, gt=0, le=1, description="the exchangeability martingale's jump rate (Simple Jumper)")
    recertify_labels: int = Field(500, gt=0, description="fresh labelled decisions (logged after the alarm) that "
                                                         "accepted-error and joint budgets re-certify on")
    recertify_decisions: int = Field(1000, gt=0, description="fresh decisions (logged after the alarm) that rate and "
                                                             "cost budgets re-certify on, from their scores alone")


class TracingConfig(Section):
    """OpenTelemetry traces of each request (:mod:`deployments.tracing`)."""

    enabled: bool = Field(False, description="export a span per request with a child span per tier")
    exporter: Literal["otlp", "file"] = Field("otlp", description="OTLP over HTTP to a collector, or JSON lines to a "
                                                                  "file")
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="the collector's OTLP/HTTP traces URL")
    file: str | None = Field(None, description="the JSON-lines file (exporter: file)")
    service_name: str = Field("cascade", min_length=1)
    sample_ratio: float = Field(1.0, ge=0, le=1, description="share of traces kept when the client sent none")

    @model_validator(mode="after")
    def _file_has_a_path(self) -> "TracingConfig":
        if self.enabled and self.exporter == "file" and not self.file:
            raise ValueError("tracing.file: the file exporter needs a path")
        return self


class TenantConfig(Section):
    """One tenant of a shared app: its bearer token picks it; its own deferral budget within the app's
    certificate (a rate target, a hard cap, a window; unset: the app's ``budget`` values)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="named in metrics, logs and GET /v1/budget")
    token_env: str | None = Field(None, min_length=1, description="environment variable holding the tenant's token")
    token_file: str | None = Field(None, description="file holding the tenant's token (read when the app is built)")
    target: float | None = Field(None, gt=0, le=1, description="rate budgets: the tenant's deferral-rate target")
    hard_cap: float | None = Field(None, gt=0, le=1, description="the tenant's max deferral rate over its window")
    window: int | None = Field(None, gt=0, description="the tenant's sliding window, in its requests")

    @model_validator(mode="after")
    def _one_token_source(self) -> "TenantConfig":
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError(f"tenant '{self.name}': give exactly one of token_env and token_file")
        return self


class ServeConfig(Section):
    host: str = Field("127.0.0.1", description="where `cascade serve` listens; under `serve run` / `serve deploy` "
                                               "the Serve config's http_options must say the same")
    port: int = Field(8000, gt=0, lt=65536, description="as host")
    detector_replicas: int = Field(1, gt=0)
    expert_replicas: int = Field(1, gt=0)
    router_replicas: int = Field(1, gt=0)
    detector_num_cpus: float = Field(0.25, gt=0)
    expert_num_cpus: float = Field(0.5, gt=0)
    router_num_cpus: float = Field(0.25, gt=0)
    max_batch_size: int = Field(32, gt=0)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    small_tier: Literal["auto", "router", "deployment"] = Field(
        "auto", description="where the small tier runs: in each router replica (cheap CPU detectors), in the "
                            "SmallDetector deployment (heavy ones), or auto by detector kind")
    router_batch_wait_timeout_s: float = Field(0.002, ge=0, description="router: how long a batch waits to fill")
    max_samples_per_request: int = Field(64, gt=0)
    max_text_chars: int = Field(200_000, gt=0, description="longest text a request may carry (real mails run to "
                                                          "160k characters; the tiers cut what they read)")
    max_features: int = Field(4096, gt=0)
    expert_timeout_s: float = Field(30.0, gt=0)
    deadline_ms: float | None = Field(None, gt=0, le=3_600_000, description="per-request latency budget (the "
                                      "X-Cascade-Deadline-Ms header overrides it): a deferred sample whose expert "
                                      "answer cannot arrive in time keeps the small tier's verdict, degraded; None: "
                                      "only expert_timeout_s")
    resources: dict[Literal["detector", "expert", "router", "holder"], dict[str, float]] | None = Field(
        None, description="role -> Ray custom resources its replicas need (e.g. expert: {gpu_node: 1}), to pin a "
                          "role to the nodes that offer them on a multi-node cluster")
    autoscaling: dict[Literal["detector", "expert", "router"], dict[str, Any]] | None = Field(
        None, description="role -> a Ray Serve autoscaling_config; a role listed here is autoscaled instead of using "
                          "its replica count")
    router_max_ongoing_requests: int = Field(
        256, gt=0, description="requests one router replica works on at once; more wait at the proxy "
                               "(router_max_queued_requests), then get a 503 with Retry-After: size both from the "
                               "measured capacity × the deadline (deployments/README.md)")
    router_max_queued_requests: int = Field(512, gt=0, description="requests queued at each proxy before a 503")
    detector_max_queued_requests: int = Field(256, gt=0, description="calls queued at each router before a 503")
    expert_max_queued_requests: int = Field(64, gt=0, description="calls queued at a router before a degraded answer")
    expert_concurrency: int | None = Field(
        None, gt=0, description="calls one expert replica computes at once (a waiting call whose deadline it can no "
                                "longer meet is dropped unstarted); None: 2 × expert.max_num_seqs for vllm / openai, "
                                "the node's core count for experts computing in a thread (knn-vote, cnn, transformers)")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After (seconds) on an overload or unavailable 503")
    readiness_timeout_s: float = Field(2.0, gt=0, description="/readyz: how long each tier may take to answer")
    expert_health_check_period_s: float = Field(10.0, gt=0, description="Serve's check_health period on the expert")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    shared_budget: SharedBudgetConfig = Field(default_factory=SharedBudgetConfig)
    decision_log: DecisionLogConfig = Field(default_factory=DecisionLogConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    tenants: list[TenantConfig] = Field(default_factory=list, description="tenants sharing the app, each with its "
                                        "token and budget; none: one budget, no token needed to detect")
    app_hard_cap: float | None = Field(None, gt=0, le=1, description="with tenants: max deferral rate of all "
                                       "tenants together over the app's window")

    def sized_for(self, capacity_rps: float, expert_calls_rps: float, deadline_ms: float,
                  queue_share: float = 0.1) -> "ServeConfig":
        """This section with its limits sized from measured capacity (requests/s and expert calls/s answered
        in full, e.g. by ``python -m experiments.benchmarks.bench_overload``) and a deadline: each router
        replica works on what the app answers within one deadline (``router_max_ongoing_requests``, split over
        the replicas), the proxy queues ``queue_share`` of that (a queued request waits at most about
        ``queue_share`` × the deadline before a router takes it; beyond, a quick 503 with Retry-After), the
        expert's queue holds the calls it answers within one deadline; ``deadline_ms`` becomes the default.

        >>> sized = ServeConfig().sized_for(capacity_rps=6.3, expert_calls_rps=3.5, deadline_ms=4000.0)
        >>> sized.router_max_ongoing_requests, sized.router_max_queued_requests, sized.expert_max_queued_requests
        (26, 3, 14)
        """
        if min(capacity_rps, expert_calls_rps, deadline_ms, queue_share) <= 0:
            raise ValueError("capacity_rps, expert_calls_rps, deadline_ms and queue_share must be positive")
        seconds = deadline_ms / 1000.0
        in_deadline = capacity_rps * seconds
        return self.model_copy(update={
            "deadline_ms": deadline_ms,
            "router_max_ongoing_requests": max(1, math.ceil(in_deadline / self.router_replicas)),
            "router_max_queued_requests": max(1, math.ceil(queue_share * in_deadline)),
            "expert_max_queued_requests": max(1, math.ceil(expert_calls_rps * seconds))})

    @model_validator(mode="after")
    def _distinct_tenants(self) -> "ServeConfig":
        names = [tenant.name for tenant in self.tenants]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"tenants: names must differ; {twice} appear more than once")
        if self.app_hard_cap is not None and not self.tenants:
            raise ValueError("app_hard_cap caps all tenants together; without tenants use budget.hard_cap")
        return self
