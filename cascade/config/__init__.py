"""One `CascadeConfig` drives the harness, the CLI and the Serve app.

Load it from YAML; an invalid file fails at load with the path of the bad field::

    >>> cfg = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}})
    >>> cfg.budget.kind
    'rate'

The budget (:mod:`cascade.config.budget`) and serving (:mod:`cascade.config.serve`) sections have
modules of their own; every model is imported from here. Sections whose kinds read different fields are checked per kind: the budget is a union of one model
per kind (a rate budget has no ``n_grid``); an expert, a dataset, a policy and the experiment's scoring
refuse a field that only other kinds read (:data:`EXPERT_FIELD_KINDS` and friends). A field left at
its default is never refused, so a config written by :meth:`CascadeConfig.to_yaml` loads back.
Old field names are read under their new ones with a :class:`ConfigWarning` (:data:`RENAMED`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from cascade.config.budget import (BUDGET_FIELD_KINDS, BUDGETS, AcceptedErrorBudget, BudgetConfig, ChainBudget,
                                   CostBudget, JointBudget, RateBudget, budget_config, is_other_kinds_default)
from cascade.config.section import Section
from cascade.config.serve import (BreakerConfig, ControlConfig, DecisionLogConfig, FeedbackConfig, MonitorConfig,
                                  ServeConfig, SharedBudgetConfig, TenantConfig, TracingConfig)
from cascade.config.tiers import TierConfig, expert_from_tiers, served_tiers
from cascade.types import CostModel

__all__ = [  # the sections live in their own modules; users import every config model from here
    "AcceptedErrorBudget", "BreakerConfig", "BudgetConfig", "CalibratorConfig", "CascadeConfig", "ChainBudget",
    "ConfigError", "ConfigWarning", "ControlConfig", "CostBudget", "DatasetConfig", "DecisionLogConfig",
    "DetectorConfig", "ExperimentConfig", "ExpertConfig", "FeedbackConfig", "JointBudget", "MonitorConfig",
    "PolicyConfig", "RateBudget", "ServeConfig", "SharedBudgetConfig", "TenantConfig", "TierConfig", "TracingConfig",
    "budget_config", "served_tiers",
]

FILE_DATASETS = ("csv", "jsonl", "parquet")
LLM_EXPERTS = ("vllm", "openai", "transformers")

RENAMED: dict[str, str] = {
    "dataset.calibration_fraction": "dataset.held_out_fraction",
    "experiment.test_samples": "experiment.max_scored_per_split",
    "detector.train_labels": "dataset.label_budget",
}
"""Old field path -> new field path. The old name is read as the new one, with a :class:`ConfigWarning`."""


class ConfigWarning(UserWarning):
    """A config that loads but should be edited (an old field name, read under its new one)."""


class DatasetConfig(Section):
    name: str = Field(description="a registered dataset (see `cascade data list`) or 'csv' / 'jsonl' / 'parquet'")
    path: str | None = Field(None, description="file for user data (csv / jsonl / parquet), relative to where cascade runs")
    text_column: str | None = Field(None, description="user data: the text to classify (default: inferred)")
    feature_columns: list[str] | None = Field(
        None, description="user data: feature columns; string ones are one-hot encoded (default: inferred)")
    label_column: str = Field("label", description="user data: the label column")
    positive_label: str | None = Field(None, description="user data: the anomaly class (the task becomes binary)")
    train_fraction: float = Field(0.6, gt=0, lt=1, description="share of the samples the detector may learn from")
    held_out_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the samples held out for the fit part (calibrator, learned policy) "
                                     "and the certify part (budget); the rest is the test split")
    certify_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of the held-out split kept apart to certify the budget; "
                                     "the rest fits the calibrator and any learned policy")
    label_budget: int | None = Field(
        None, gt=0, description="labelled training samples the setting may use (a seeded stratified subset of the "
                                "train split): the detector and cross-fitting learn from these only; None: all. "
                                "The experts' retrieval pool is the whole train split")
    max_samples: int | None = Field(None, gt=0, description="stratified subsample for quick runs")
    normal_classes: list[int] | None = Field(None, description="fashion-mnist: classes treated as normal")

    @model_validator(mode="after")
    def _fractions(self) -> "DatasetConfig":
        if self.train_fraction + self.held_out_fraction >= 1:
            raise ValueError("train_fraction + held_out_fraction must leave room for a test split")
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


DATASET_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "path": FILE_DATASETS, "text_column": FILE_DATASETS, "feature_columns": FILE_DATASETS,
    "label_column": FILE_DATASETS, "positive_label": FILE_DATASETS, "normal_classes": ("fashion-mnist",),
}
"""Dataset fields only some datasets read -> those datasets (``dataset.name``)."""


class DetectorConfig(Section):
    kind: Literal["tfidf-lr", "tfidf-knn", "embedding-knn", "isolation-forest", "embedding-lr",
                  "minilm-finetune", "pixel-lr", "pixel-cnn", "tabular-lr", "tabular-hgb", "pyod"] = "tfidf-lr"
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="detector hyper-parameters, e.g. {model: ECOD} for kind pyod")
    one_class: bool = Field(False, description="fit on normal (label 0) training samples only")
    distance_feature: bool = Field(False, description="add the distance to the nearest training sample as a policy feature")
    input_view: int = Field(0, ge=0, description="add this many principal components of the input (MiniLM embedding "
                            "for text, standardised columns, pixels) as policy features; texts also add length and "
                            "truncation")
    cost_feature: bool | None = Field(None, description="add the predicted cost of an expert call (the input's length "
                                      "under the cost model) as a policy feature; None: on for a 'learned' policy")


class CalibratorConfig(Section):
    kind: Literal["none", "temperature", "platt", "isotonic"] = "platt"


class ExpertConfig(Section):
    """The large tier: which model, how it is prompted and scored, and how it is reached.

    ``kind``: ``vllm`` (in-process vLLM), ``openai`` (a vLLM OpenAI-compatible server),
    ``transformers`` (plain Hugging Face, the comparison baseline), ``knn-vote`` (the no-LLM control:
    a vote of the ``shots`` retrieved labelled neighbours) or ``cnn`` (images). A field only other
    kinds read (:data:`EXPERT_FIELD_KINDS`) is refused at load unless it is left at its default.
    """

    kind: Literal["vllm", "openai", "transformers", "knn-vote", "cnn"] = "vllm"
    model: str = Field("smollm2-135m-instruct", min_length=1,
                       description="LLM kinds: a registered model (see `cascade models list`) or a local Hugging Face "
                                   "folder (openai: its tokenizer); cnn: a name for the CNN")
    base_url: str | None = Field(None, description="openai: the OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    served_model_name: str | None = Field(
        None, min_length=1, description="openai: the server's model id (None: the first model it lists)")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="openai: NAME of the environment variable holding the API key, sent as a bearer token")
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = Field(
        "auto", description="vllm, transformers: engine dtype; auto: bfloat16 on a GPU or a CPU with bf16 "
                            "instructions, float32 on other CPUs (see cascade.experts.dtype)")
    max_model_len: int = Field(2048, gt=0, description="LLM kinds: context length, prompt and answer together; every "
                                                       "kind: a cost budget without max_cost_per_call bounds one call "
                                                       "by this many tokens at the configured prices")
    kv_cache_gib: float = Field(1.0, gt=0, description="vllm: KV cache size")
    max_num_seqs: int = Field(16, gt=0, description="vllm: sequences per engine step; openai, transformers: the "
                                                    "default batch_size; every kind: the expert deployment takes "
                                                    "twice this many calls at once")
    enforce_eager: bool = Field(True, description=(
        "vllm: run without graph capture / compilation. On a 2-core CPU compiled mode loaded ~50 s slower for "
        "~12% more samples/s (bench_experts --section modes): eager wins below ~1,000 samples per engine start"))
    prefix_caching: bool = Field(True, description=(
        "vllm: reuse the KV cache of shared prompt prefixes (the system message every prompt starts with, the "
        "earlier turns of a rationale conversation)"))
    batch_size: int | None = Field(
        None, gt=0, description="openai, transformers: prompts per HTTP request / forward pass; None: max_num_seqs")
    labels: list[str] = Field(default_factory=lambda: ["ham", "spam"], min_length=2)
    template: str | None = Field(None, description="LLM kinds: prompt question template; {text} (required), {labels} "
                                                   "and {examples} are filled in")
    shots: int = Field(0, ge=0, description="LLM kinds: k retrieved in-context examples; knn-vote: k neighbours voting")
    pool_groups: list[str] | None = Field(None, description="learn from / retrieve only training samples of these "
                                          "groups (e.g. Fashion-MNIST classes): a specialist expert")
    shot_max_tokens: int = Field(8, gt=0, description="LLM kinds: each retrieved example is cut to this many tokens")
    max_input_tokens: int = Field(48, gt=0, description="LLM kinds: the judged sample is cut to this many tokens, and "
                                                        "counted; every kind: the small tier's input view cuts texts "
                                                        "to this many tokens' characters")
    explain_max_tokens: int = Field(96, gt=0, description="LLM kinds: bound on a generated rationale's length")
    vote_smoothing: float = Field(0.5, gt=0, description="knn-vote: pseudo-count per label")
    calibrator: Literal["none", "temperature", "platt", "isotonic"] | None = Field(
        None, description="LLM kinds, knn-vote: calibrator of the expert's label probabilities, fitted on the labelled "
                          "pool judged leave-one-out, never on the fit, certify or test part (None: platt; temperature "
                          "keeps the expert's answers, platt and isotonic also move its decisions, see the experiment "
                          "reports; cnn: none, it is trained on that pool)")
    calibration_samples: int | None = Field(
        300, ge=20, description="LLM kinds, knn-vote: judge at most this many pool samples (a seeded uniform draw) to "
                                "fit the calibrator; None: the whole pool. Each is one expert call")
    channels: int = Field(8, ge=1, description="cnn: filters of the first conv block (the second has twice as many); "
                                               "with hidden_units, the CNN's size and multiply-accumulates per image")
    hidden_units: int = Field(32, ge=1, description="cnn: units of the hidden layer of the CNN's head")
    epochs: int = Field(6, ge=1, description="cnn: passes over the labelled pool while training")
    timeout_s: float = Field(30.0, gt=0, description="openai: seconds per HTTP request")
    max_retries: int = Field(2, ge=0, description="openai: retries of a failed HTTP request")
    retry_backoff_s: float = Field(0.5, ge=0, description="openai: first back-off between HTTP retries (doubles each "
                                                          "retry)")

    @property
    def calibration(self) -> str:
        """The calibrator kind this expert's probabilities pass through (``none``: as the expert gives them)."""
        if self.kind == "cnn":
            return "none"
        return self.calibrator or "platt"

    @property
    def display_name(self) -> str:
        """What the expert really is, e.g. ``vllm:smollm2-135m-instruct (4-shot)`` or ``knn-vote (k=4, no LLM)``."""
        if self.kind == "knn-vote":
            return f"knn-vote (k={self.shots}, no LLM)"
        if self.kind == "cnn":
            return (f"cnn ({self.channels}/{2 * self.channels} filters, {self.hidden_units} hidden, {self.epochs} "
                    "epochs; trained on the labelled pool)")
        name = self.served_model_name if self.kind == "openai" and self.served_model_name else self.model
        return f"{self.kind}:{Path(name).name or name}" + (f" ({self.shots}-shot)" if self.shots else "")


EXPERT_FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "model": (*LLM_EXPERTS, "cnn"),
    "base_url": ("openai",), "served_model_name": ("openai",), "api_key_env": ("openai",),
    "timeout_s": ("openai",), "max_retries": ("openai",), "retry_backoff_s": ("openai",),
    "dtype": ("vllm", "transformers"),
    "kv_cache_gib": ("vllm",), "enforce_eager": ("vllm",), "prefix_caching": ("vllm",),
    "batch_size": ("openai", "transformers"),
    "template": LLM_EXPERTS, "shot_max_tokens": LLM_EXPERTS,
    "explain_max_tokens": LLM_EXPERTS,
    "shots": (*LLM_EXPERTS, "knn-vote"),
    "vote_smoothing": ("knn-vote",),
    "channels": ("cnn",), "hidden_units": ("cnn",), "epochs": ("cnn",),
    "calibrator": (*LLM_EXPERTS, "knn-vote"), "calibration_samples": (*LLM_EXPERTS, "knn-vote"),
}
"""Expert fields only some kinds read -> those kinds (the other fields every kind reads)."""
TierConfig.model_rebuild(_types_namespace={"ExpertConfig": ExpertConfig})  # a tier holds an expert


class PolicyConfig(Section):
    kind: Literal["confidence", "margin", "entropy", "posthoc", "learned", "random", "oracle", "never",
                  "always"] = "confidence"
    params: dict[str, Any] = Field(default_factory=dict)
    crossfit_folds: int = Field(0, ge=0, description="'learned': also fit on out-of-fold small-tier and expert outputs "
                                "over the train split, in this many folds (0 = calibration split only; the extra "
                                "expert calls are reported)")


POLICY_FIELD_KINDS: dict[str, tuple[str, ...]] = {"crossfit_folds": ("learned",)}
"""Policy fields only some kinds read -> those kinds."""


class ExperimentConfig(Section):
    seed: int = 0
    random_seeds: int = Field(10, ge=1)
    splits: int = Field(100, ge=1, description="random calibration/test splits for budget adherence")
    budgets: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.3, 0.5])
    policies: list[Literal["confidence", "margin", "entropy", "posthoc", "learned"]] = Field(
        default_factory=lambda: ["confidence", "margin", "entropy", "posthoc", "learned"], min_length=1,
        description="deferral policies the harness sweeps; 'posthoc' and 'learned' learn from the experts' outputs "
                    "on the fit part, so the experts score the held-out parts too (rules alone: the test part only)")
    results_dir: str = "results"
    max_scored_per_split: int | None = Field(
        None, gt=0, description="cap on the samples the tiers score in the test split, and in the held-out split "
                                "(fit and certify parts together): a seeded subset of each (LLM cost); None: all")
    scoring: Literal["local", "ray-data"] = Field(
        "local", description="score experts in this process, or with Ray Data map_batches over a Ray cluster")
    ray_data_concurrency: int = Field(1, gt=0, description="ray-data scoring: expert actors (one engine each)")
    ray_data_num_cpus: float = Field(1.0, gt=0, description="ray-data scoring: CPUs per expert actor")


SCORING_FIELDS: dict[str, tuple[str, ...]] = {"ray_data_concurrency": ("ray-data",), "ray_data_num_cpus": ("ray-data",)}
"""Experiment fields only some ``experiment.scoring`` modes read -> those modes."""


class CascadeConfig(Section):
    name: str = "cascade"
    artifact_dir: str = "artifacts/default"
    dataset: DatasetConfig
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    calibrator: CalibratorConfig = Field(default_factory=CalibratorConfig)
    expert: ExpertConfig = Field(default_factory=ExpertConfig)
    control_expert: ExpertConfig | None = None
    tiers: list[TierConfig] | None = Field(
        None, min_length=1, description="the tiers after the small one, cheapest first (see cascade.config.tiers); "
                                        "None: expert is the one tier")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    budget: BudgetConfig = Field(default_factory=RateBudget)
    cost: CostModel = Field(default_factory=CostModel)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)

    @model_validator(mode="before")
    @classmethod
    def _old_names_and_budget_kind(cls, raw: Any) -> Any:
        """Read each old field name (:data:`RENAMED`) as its new one with a :class:`ConfigWarning`; give the
        budget its ``kind`` (``rate`` when left out) and drop the fields its kind does not read that sit at
        their defaults (as every field does in a config written before the budget kinds were split)."""
        if not isinstance(raw, dict):
            return raw
        raw = {name: dict(value) if isinstance(value, dict) else value for name, value in raw.items()}
        problems = []
        for old, new in RENAMED.items():
            (old_section, old_field), (new_section, new_field) = old.split("."), new.split(".")
            section = raw.get(old_section)
            if not isinstance(section, dict) or old_field not in section:
                continue
            target = raw.setdefault(new_section, {})
            if not isinstance(target, dict):
                continue
            if new_field in target:
                problems.append(f"{old}: now called {new}, which is also set; remove {old}")
                continue
            target[new_field] = section.pop(old_field)
            warnings.warn(f"{old}: now called {new}; read as that (rename it in the config)", ConfigWarning,
                          stacklevel=2)
        if problems:
            raise ValueError("\n".join(problems))
        budget = raw.get("budget")
        if isinstance(budget, dict):
            if budget.get("served_rule", "") is None:
                del budget["served_rule"]  # null: the kind's default
            model = BUDGETS.get(budget.setdefault("kind", "rate"))
            if model is not None:
                raw["budget"] = {name: value for name, value in budget.items()
                                 if name in model.model_fields or not is_other_kinds_default(name, value)}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _expert_is_the_last_tier(cls, raw: Any) -> Any:
        return expert_from_tiers(raw)

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
    """One line per problem: ``  detector.kind: Input should be ...``.

    A budget's kind is left out of the path (``budget.n_grid``, not ``budget.rate.n_grid``); a budget
    field that only other kinds read says which kinds read it.
    """
    lines = []
    for err in exc.errors():
        if not err["loc"] and err["type"] == "value_error":  # cross-field problems carry their own paths
            lines += [f"  {line}" for line in str(err["ctx"]["error"]).splitlines()]
            continue
        loc = [part for part in err["loc"] if part != "[key]"]  # a bad mapping key: the path names the key
        message = err["msg"]
        kind = loc.pop(1) if loc[:1] == ["budget"] and len(loc) > 2 and loc[1] in BUDGETS else None
        if err["type"] == "union_tag_invalid":
            loc.append("kind")
            message = f"Input should be {_listed((repr(k) for k in BUDGETS), 'or')}, got {err['input'].get('kind')!r}"
        elif kind is not None and err["type"] == "extra_forbidden" and len(loc) == 2 and loc[1] in BUDGET_FIELD_KINDS:
            message = only_read_by(BUDGET_FIELD_KINDS[str(loc[1])], "budgets", "budget", kind)
        where = ".".join(str(part) for part in loc) or "<root>"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def only_read_by(kinds: tuple[str, ...], plural: str, singular: str, kind: str) -> str:
    """``only vllm experts read it; this expert is 'knn-vote'``."""
    return f"only {_listed(kinds, 'and')} {plural} read it; this {singular} is '{kind}'"


def _listed(names: Any, last: str) -> str:
    """``a, b and c`` (or ``a, b or c``)."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"
