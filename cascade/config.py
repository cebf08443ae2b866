"""One `CascadeConfig` drives the harness, the CLI and the Serve app.

Load it from YAML; an invalid file fails at load with the path of the bad field::

    >>> cfg = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}})
    >>> cfg.budget.kind
    'rate'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.types import CostModel


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetConfig(_Section):
    name: str = Field(description="a registered dataset (see `cascade data list`) or 'csv' / 'jsonl'")
    path: str | None = Field(None, description="file for user data (csv / jsonl)")
    text_column: str | None = None
    feature_columns: list[str] | None = None
    label_column: str = "label"
    positive_label: str | None = None
    train_fraction: float = Field(0.6, gt=0, lt=1)
    calibration_fraction: float = Field(0.2, gt=0, lt=1)
    max_samples: int | None = Field(None, gt=0, description="stratified subsample for quick runs")
    normal_classes: list[int] | None = Field(None, description="Fashion-MNIST: classes treated as normal")

    @model_validator(mode="after")
    def _fractions(self) -> "DatasetConfig":
        if self.train_fraction + self.calibration_fraction >= 1:
            raise ValueError("train_fraction + calibration_fraction must leave room for a test split")
        if self.name in ("csv", "jsonl") and not self.path:
            raise ValueError(f"dataset '{self.name}' needs a path")
        return self


class DetectorConfig(_Section):
    kind: Literal["tfidf-lr", "tfidf-knn", "embedding-knn", "isolation-forest", "embedding-lr",
                  "minilm-finetune", "pixel-lr", "pixel-cnn"] = "tfidf-lr"
    params: dict[str, Any] = Field(default_factory=dict)
    train_labels: int | None = Field(None, gt=0, description="use only this many labelled training samples")
    one_class: bool = Field(False, description="fit on normal (label 0) training samples only")
    distance_feature: bool = Field(False, description="add the distance to the nearest training sample as a policy feature")


class CalibratorConfig(_Section):
    kind: Literal["none", "temperature", "platt", "isotonic"] = "platt"


class ExpertConfig(_Section):
    kind: Literal["vllm", "openai", "transformers", "knn-vote", "cnn"] = "vllm"
    model: str = "smollm2-135m-instruct"
    base_url: str | None = Field(None, description="OpenAI-compatible server, for kind 'openai'")
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    max_model_len: int = Field(2048, gt=0)
    kv_cache_gib: float = Field(1.0, gt=0)
    max_num_seqs: int = Field(16, gt=0)
    labels: list[str] = Field(default_factory=lambda: ["ham", "spam"])
    template: str | None = Field(None, description="prompt template; {text} and {examples} are filled in")
    shots: int = Field(0, ge=0, description="k retrieved in-context examples")
    max_input_tokens: int = Field(384, gt=0, description="longer inputs are truncated, and counted")
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0)


class PolicyConfig(_Section):
    kind: Literal["confidence", "margin", "entropy", "posthoc", "random", "oracle", "never", "always"] = "confidence"
    params: dict[str, Any] = Field(default_factory=dict)


class BudgetConfig(_Section):
    kind: Literal["rate", "cost", "accepted-error", "joint"] = "rate"
    target: float = Field(0.2, gt=0, description="rate in (0,1], cost per 1k requests, or max error")
    max_rate: float | None = Field(None, gt=0, le=1, description="for 'joint': the deferral-rate bound")
    delta: float | None = Field(None, gt=0, lt=1, description="failure probability; None = in expectation")
    hard_cap: float | None = Field(None, gt=0, le=1, description="serving: max deferral rate over the window")
    window: int = Field(1000, gt=0, description="serving: sliding-window length in requests")
    learning_rate: float = Field(0.05, gt=0, description="serving: online threshold step size")


class BreakerConfig(_Section):
    """The circuit breaker in front of the expert: fail fast while the expert is down."""

    failures: int = Field(3, gt=0, description="consecutive expert failures or timeouts that open the circuit")
    cooldown_s: float = Field(5.0, gt=0, description="an open circuit lets one probe through after this long")


class ControlConfig(_Section):
    """Who may change the running app (``PUT /v1/budget``): holders of a bearer token."""

    token_env: str = Field("CASCADE_API_TOKEN", min_length=1, description="environment variable holding the token")
    token_file: str | None = Field(None, description="file holding the token (read when the app is built)")
    allow_unauthenticated: bool = Field(
        False, description="local use only: accept mutations without a token when none is configured")


class SharedBudgetConfig(_Section):
    """One budget for the app: router replicas lease deferral allowance from one holder."""

    lease_deferrals: int = Field(16, gt=0, description="deferrals a router replica may make per lease")
    lease_ttl_s: float = Field(5.0, gt=0, description="an unreported lease expires, its allowance returned, after this")
    num_cpus: float = Field(0.05, gt=0, description="CPUs of the holder's one replica")
    max_queued_requests: int = Field(256, gt=0, description="exchanges queued at a router before failing (retried)")


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
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
    max_text_chars: int = Field(20000, gt=0)
    max_features: int = Field(4096, gt=0)
    expert_timeout_s: float = Field(30.0, gt=0)
    autoscaling: dict[str, Any] | None = None
    router_max_queued_requests: int = Field(512, gt=0, description="requests queued at each proxy before a 503")
    detector_max_queued_requests: int = Field(256, gt=0, description="calls queued at each router before a 503")
    expert_max_queued_requests: int = Field(64, gt=0, description="calls queued at a router before a degraded answer")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After (seconds) on an overload or unavailable 503")
    readiness_timeout_s: float = Field(2.0, gt=0, description="/readyz: how long each tier may take to answer")
    expert_health_check_period_s: float = Field(10.0, gt=0, description="Serve's check_health period on the expert")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    shared_budget: SharedBudgetConfig = Field(default_factory=SharedBudgetConfig)


class ExperimentConfig(_Section):
    seed: int = 0
    random_seeds: int = Field(10, ge=1)
    splits: int = Field(100, ge=1, description="random calibration/test splits for budget adherence")
    budgets: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.3, 0.5])
    results_dir: str = "results"
    test_samples: int | None = Field(None, gt=0, description="cap on scored test samples (LLM cost)")
    scoring: Literal["local", "ray-data"] = Field(
        "local", description="score experts in this process, or with Ray Data map_batches over a Ray cluster")
    ray_data_concurrency: int = Field(1, gt=0, description="ray-data scoring: expert actors (one engine each)")
    ray_data_num_cpus: float = Field(1.0, gt=0, description="ray-data scoring: CPUs per expert actor")


class CascadeConfig(_Section):
    name: str = "cascade"
    artifact_dir: str = "artifacts/default"
    dataset: DatasetConfig
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    calibrator: CalibratorConfig = Field(default_factory=CalibratorConfig)
    expert: ExpertConfig = Field(default_factory=ExpertConfig)
    control_expert: ExpertConfig | None = None
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    cost: CostModel = Field(default_factory=CostModel)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "CascadeConfig":
        """Read and validate a YAML file; errors name the file and each bad field's path."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> "CascadeConfig":
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{source}: invalid config\n{format_validation_error(exc)}") from exc

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the fields."""


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``  detector.kind: Input should be ...``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "<root>"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)
