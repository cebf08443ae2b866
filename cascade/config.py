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

FILE_DATASETS = ("csv", "jsonl", "parquet")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetConfig(_Section):
    name: str = Field(description="a registered dataset (see `cascade data list`) or 'csv' / 'jsonl' / 'parquet'")
    path: str | None = Field(None, description="file for user data (csv / jsonl / parquet), relative to where cascade runs")
    text_column: str | None = Field(None, description="user data: the text to classify (default: inferred)")
    feature_columns: list[str] | None = Field(
        None, description="user data: feature columns; string ones are one-hot encoded (default: inferred)")
    label_column: str = "label"
    positive_label: str | None = Field(None, description="user data: the anomaly class (the task becomes binary)")
    train_fraction: float = Field(0.6, gt=0, lt=1)
    calibration_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share: cut into fit and certify parts")
    certify_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of the held-out split kept apart to certify the budget; "
                                     "the rest fits the calibrator and any learned policy")
    max_samples: int | None = Field(None, gt=0, description="stratified subsample for quick runs")
    normal_classes: list[int] | None = Field(None, description="Fashion-MNIST: classes treated as normal")

    @model_validator(mode="after")
    def _fractions(self) -> "DatasetConfig":
        if self.train_fraction + self.calibration_fraction >= 1:
            raise ValueError("train_fraction + calibration_fraction must leave room for a test split")
        if self.name in FILE_DATASETS and not self.path:
            raise ValueError(f"dataset '{self.name}' needs a path")
        return self

    def loader_options(self) -> dict[str, Any]:
        """Keyword options of :func:`cascade.data.load` beyond the split settings."""
        options: dict[str, Any] = {}
        if self.name in FILE_DATASETS:
            options = dict(path=self.path, text_column=self.text_column, feature_columns=self.feature_columns,
                           label_column=self.label_column, positive_label=self.positive_label)
        if self.normal_classes is not None:
            options["normal_classes"] = tuple(self.normal_classes)
        return options


class DetectorConfig(_Section):
    kind: Literal["tfidf-lr", "tfidf-knn", "embedding-knn", "isolation-forest", "embedding-lr",
                  "minilm-finetune", "pixel-lr", "pixel-cnn", "tabular-lr", "tabular-hgb", "pyod"] = "tfidf-lr"
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="detector hyper-parameters, e.g. {model: ECOD} for kind pyod")
    train_labels: int | None = Field(None, gt=0, description="use only this many labelled training samples")
    one_class: bool = Field(False, description="fit on normal (label 0) training samples only")
    distance_feature: bool = Field(False, description="add the distance to the nearest training sample as a policy feature")
    input_view: int = Field(0, ge=0, description="add this many principal components of the input (MiniLM embedding "
                            "for text, standardised columns, pixels) as policy features; texts also add length and "
                            "truncation")
    cost_feature: bool | None = Field(None, description="add the predicted cost of an expert call (the input's length "
                                      "under the cost model) as a policy feature; None: on for a 'learned' policy")


class CalibratorConfig(_Section):
    kind: Literal["none", "temperature", "platt", "isotonic"] = "platt"


class ExpertConfig(_Section):
    """The large tier: which model, how it is prompted and scored, and how it is reached.

    ``kind``: ``vllm`` (in-process vLLM), ``openai`` (a vLLM OpenAI-compatible server),
    ``transformers`` (plain Hugging Face, the comparison baseline), ``knn-vote`` (the no-LLM control:
    a vote of the ``shots`` retrieved labelled neighbours) or ``cnn`` (images).
    """

    kind: Literal["vllm", "openai", "transformers", "knn-vote", "cnn"] = "vllm"
    model: str = Field("smollm2-135m-instruct", min_length=1,
                       description="a registered model (see `cascade models list`) or a local Hugging Face folder")
    base_url: str | None = Field(None, description="OpenAI-compatible server, for kind 'openai'")
    served_model_name: str | None = Field(
        None, min_length=1, description="kind 'openai': the server's model id (None: the first model it lists)")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="kind 'openai': NAME of the environment variable holding the API key, sent as a bearer token")
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = Field(
        "auto", description="engine dtype (vllm, transformers); auto: bfloat16 on a GPU or a CPU with bf16 "
                            "instructions, float32 on other CPUs (see cascade.experts.dtype)")
    max_model_len: int = Field(2048, gt=0)
    kv_cache_gib: float = Field(1.0, gt=0)
    max_num_seqs: int = Field(16, gt=0)
    enforce_eager: bool = Field(True, description=(
        "vLLM: run without graph capture / compilation. On a 2-core CPU compiled mode loaded ~50 s slower for "
        "~12% more samples/s (bench_experts --section modes): eager wins below ~1,000 samples per engine start"))
    prefix_caching: bool = Field(True, description=(
        "vLLM: reuse the KV cache of shared prompt prefixes (the system message every prompt starts with, the "
        "earlier turns of a rationale conversation)"))
    batch_size: int | None = Field(
        None, gt=0, description="prompts per engine call (transformers forward pass, HTTP request); None: max_num_seqs")
    labels: list[str] = Field(default_factory=lambda: ["ham", "spam"], min_length=2)
    template: str | None = Field(None, description="prompt template; {text} and {examples} are filled in")
    shots: int = Field(0, ge=0, description="k retrieved in-context examples")
    pool_groups: list[str] | None = Field(None, description="learn from / retrieve only training samples of these "
                                          "groups (e.g. Fashion-MNIST classes): a specialist expert")
    shot_max_tokens: int = Field(128, gt=0, description="each retrieved example is cut to this many tokens")
    max_input_tokens: int = Field(384, gt=0, description="the judged sample is cut to this many tokens, and counted")
    explain_max_tokens: int = Field(96, gt=0, description="bound on a generated rationale's length")
    vote_smoothing: float = Field(0.5, gt=0, description="knn-vote: pseudo-count per label")
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0)
    retry_backoff_s: float = Field(0.5, ge=0, description="first back-off between HTTP retries (doubles each retry)")

    @property
    def display_name(self) -> str:
        """What the expert really is, e.g. ``vllm:smollm2-135m-instruct (4-shot)`` or ``knn-vote (k=4, no LLM)``."""
        if self.kind == "knn-vote":
            return f"knn-vote (k={self.shots}, no LLM)"
        if self.kind == "cnn":
            return "cnn (trained on the labelled pool)"
        name = self.served_model_name if self.kind == "openai" and self.served_model_name else self.model
        return f"{self.kind}:{Path(name).name or name}" + (f" ({self.shots}-shot)" if self.shots else "")


class PolicyConfig(_Section):
    kind: Literal["confidence", "margin", "entropy", "posthoc", "learned", "random", "oracle", "never",
                  "always"] = "confidence"
    params: dict[str, Any] = Field(default_factory=dict)
    crossfit_folds: int = Field(0, ge=0, description="'learned': also fit on out-of-fold small-tier and expert outputs "
                                "over the train split, in this many folds (0 = calibration split only; the extra "
                                "expert calls are reported)")


class BudgetConfig(_Section):
    kind: Literal["rate", "cost", "accepted-error", "joint"] = "rate"
    target: float = Field(0.2, gt=0, description="rate in (0,1], cost per 1k requests, or max error")
    max_rate: float | None = Field(None, gt=0, le=1, description="for 'joint': the deferral-rate bound")
    max_cost_per_call: float | None = Field(
        None, gt=0, description="for 'cost': the most one expert call can cost (default: expert.max_model_len "
                                "tokens at the configured prices)")
    delta: float | None = Field(None, gt=0, lt=1, description="failure probability; None = in expectation")
    n_grid: int = Field(20, ge=1, le=1000, description="accepted-error / joint: thresholds Learn-then-Test tests "
                                                       "(quantiles of the fit part's scores)")
    hard_cap: float | None = Field(None, gt=0, le=1, description="serving: max deferral rate over the window")
    cap_overrides_certificate: bool = Field(
        False, description="accepted-error / joint: allow a hard cap although it makes the small tier answer samples "
                           "the certified rule defers; each such answer is flagged certified: false and counted")
    served_rule: Literal["certified", "track"] | None = Field(
        None, description="serving: 'certified' serves the certified rule as it is; 'track' moves it to hold the "
                          "target rate (rate: anywhere, the status says when the certificate stops covering it; "
                          "cost: only to defer less; accepted-error / joint: only among the grid rules that passed "
                          "Learn-then-Test). Default: track for rate and cost, certified for accepted-error and joint")
    window: int = Field(1000, gt=0, description="serving: sliding-window length in requests")
    learning_rate: float = Field(0.05, gt=0, description="serving: online threshold step size")
    tie_seed: int | None = Field(
        0, ge=0, description="seed of the per-sample keys that break ties at the threshold (tuning, harness and "
                             "serving alike); null accepts every tied sample")
    certify_reuse: Literal["refuse", "spend-delta"] = Field(
        "refuse", description="a second, different tuning on a certify part already used to tune: 'refuse' it, or "
                              "'spend-delta' (the certificate states the δ spent on that part over all its tunings, "
                              "Bonferroni; in-expectation tunings are not covered by it)")

    @model_validator(mode="after")
    def _resolve_served_rule(self) -> "BudgetConfig":
        """Fill ``served_rule`` with its per-kind default, so a dumped config says what is served."""
        if self.served_rule is None:
            self.served_rule = "certified" if self.kind in ("accepted-error", "joint") else "track"
        return self


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
    policies: list[Literal["confidence", "margin", "entropy", "posthoc", "learned"]] = Field(
        default_factory=lambda: ["confidence", "margin", "entropy", "posthoc", "learned"], min_length=1,
        description="deferral policies the harness sweeps; 'posthoc' and 'learned' learn from the experts' outputs "
                    "on the fit part, so the experts score the held-out parts too (rules alone: the test part only)")
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

    @model_validator(mode="after")
    def _sections_agree(self) -> "CascadeConfig":
        """Cross-field checks (dataset vs detector vs experts); each problem names its field path."""
        from cascade.checks import config_problems

        problems = config_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

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
        if not err["loc"] and err["type"] == "value_error":  # cross-field problems carry their own paths
            lines += [f"  {line}" for line in str(err["ctx"]["error"]).splitlines()]
            continue
        where = ".".join(str(part) for part in err["loc"]) or "<root>"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)
