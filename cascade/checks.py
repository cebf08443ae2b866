"""Cross-field checks of a :class:`~cascade.config.CascadeConfig`, run when it is validated.

Every check of a config runs here, at load, rather than when a field is first used: fields that
only other kinds read, fields a kind needs, the dataset against the detector and the experts, the
budget against its hard cap. Each problem is one line that starts with the field path to change
and says how:

>>> from cascade.config import CascadeConfig, ConfigError
>>> CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "detector": {"kind": "isolation-forest"}})
Traceback (most recent call last):
...
cascade.config.ConfigError: <config>: invalid config
  detector.kind: 'isolation-forest' takes feature rows, but dataset 'spamassassin' holds text; for text use one of embedding-knn, embedding-lr, minilm-finetune, tfidf-knn, tfidf-lr
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cascade.config import (DATASET_FIELD_NAMES, EXPERT_FIELD_KINDS, POLICY_FIELD_KINDS, SCORING_FIELDS,
                            only_read_by)

if TYPE_CHECKING:
    from cascade.config import CascadeConfig, ExpertConfig

_WHAT = {"text": "text", "features": "feature rows", "image": "images"}
_IMAGE_EXPERTS = ("cnn",)
_FASHION_CLASSES = range(10)


def config_problems(config: CascadeConfig) -> list[str]:
    """Every problem of the config that a single field's type cannot catch (empty when there is none)."""
    from cascade import data

    problems = field_problems(config)
    dataset = config.dataset
    try:
        modality, classes = data.describe(dataset.name, **dataset.loader_options())
    except (ValueError, OSError) as exc:
        message = str(exc)
        if not message.startswith("dataset."):
            field = "dataset.name" if dataset.name not in data.FILE_FORMATS else "dataset.path"
            message = f"{field}: {message}"
        return problems + [message] + budget_problems(config) + tier_problems(config)
    return problems + _agreement_problems(config, modality, classes) + budget_problems(config) + tier_problems(config)


def field_problems(config: CascadeConfig) -> list[str]:
    """Fields set on a kind that does not read them, and what a kind needs that its fields do not give.

    >>> from cascade.config import CascadeConfig
    >>> CascadeConfig.from_dict({"dataset": {"name": "spamassassin"},
    ...                          "control_expert": {"kind": "knn-vote", "shots": 4, "kv_cache_gib": 4}})
    Traceback (most recent call last):
    ...
    cascade.config.ConfigError: <config>: invalid config
      control_expert.kv_cache_gib: only vllm experts read it; this expert is 'knn-vote'
    """
    dataset, policy, experiment = config.dataset, config.policy, config.experiment
    problems = [f"dataset.{name}: {only_read_by(names, 'datasets', 'dataset', dataset.name)}"
                for name, names in _unread(dataset, DATASET_FIELD_NAMES, dataset.name)]
    problems += [f"policy.{name}: {only_read_by(kinds, 'policies', 'policy', policy.kind)}"
                 for name, kinds in _unread(policy, POLICY_FIELD_KINDS, policy.kind)]
    problems += [f"experiment.{name}: only {' and '.join(modes)} scoring reads it; experiment.scoring is "
                 f"'{experiment.scoring}'" for name, modes in _unread(experiment, SCORING_FIELDS, experiment.scoring)]
    if dataset.name == "fashion-mnist" and dataset.normal_classes is not None and (
            not dataset.normal_classes or not set(dataset.normal_classes) <= set(_FASHION_CLASSES)):
        problems.append(f"dataset.normal_classes: must be a non-empty subset of 0..9 (the Fashion-MNIST classes), "
                        f"got {dataset.normal_classes}")
    problems += _detector_params_problems(config)
    for field, expert in checked_experts(config):
        if expert is not None:
            problems += [f"{field}.{name}: {only_read_by(kinds, 'experts', 'expert', expert.kind)}"
                         for name, kinds in _unread(expert, EXPERT_FIELD_KINDS, expert.kind)]
            problems += _expert_needs(field, expert)
    return problems + _autoscaling_problems(config.serve.autoscaling)


def _unread(section: BaseModel, readers: dict[str, tuple[str, ...]], kind: str) -> list[tuple[str, tuple[str, ...]]]:
    """(field, the kinds that read it) for each field set away from its default on a ``kind`` that does not read it
    (a field at its default changes nothing, and a config written by ``to_yaml`` holds every field)."""
    fields = type(section).model_fields
    return [(name, kinds) for name, kinds in readers.items()
            if kind not in kinds and name in section.model_fields_set
            and getattr(section, name) != fields[name].get_default(call_default_factory=True)]


def checked_experts(config: CascadeConfig) -> list[tuple[str, ExpertConfig | None]]:
    """(field path, expert) of every expert the config holds: ``expert`` or, with ``tiers``, each tier's (``expert``
    is then the last tier's), and ``control_expert``."""
    experts = ([(f"tiers.{i}.expert", tier.expert) for i, tier in enumerate(config.tiers)] if config.tiers is not None
               else [("expert", config.expert)])
    return [*experts, ("control_expert", config.control_expert)]


def _expert_needs(field: str, expert: ExpertConfig) -> list[str]:
    problems = []
    if expert.kind == "openai" and not expert.base_url:
        problems.append(f"{field}.base_url: an openai expert needs the server's URL (e.g. http://127.0.0.1:8000)")
    if expert.kind == "knn-vote" and expert.shots < 1:
        problems.append(f"{field}.shots: a knn-vote expert votes its retrieved neighbours; set shots >= 1")
    if expert.template is not None and expert.kind in EXPERT_FIELD_KINDS["template"]:
        problems += _template_problems(f"{field}.template", expert.template)
    return problems


def _template_problems(path: str, template: str) -> list[str]:
    from cascade.experts.prompts import fill

    if "{text}" not in template:
        return [f"{path}: must contain the {{text}} placeholder"]
    try:
        fill(template, text="", labels="", examples="")
    except ValueError as exc:
        return [f"{path}: {exc}"]
    return []


def _detector_params_problems(config: CascadeConfig) -> list[str]:
    detector = config.detector
    if not detector.params:
        return []
    from cascade.detectors import detector_class

    takes = [name for name in inspect.signature(detector_class(detector.kind).__init__).parameters if name != "self"]
    unknown = sorted(set(detector.params) - set(takes))
    if unknown:
        return [f"detector.params: '{detector.kind}' takes no {', '.join(unknown)}; it takes {', '.join(takes)}"]
    return []


def _autoscaling_problems(autoscaling: dict[str, dict[str, Any]] | None) -> list[str]:
    """Each role's Ray Serve ``autoscaling_config``, checked by Ray Serve's own model (imported only when set)."""
    if not autoscaling:
        return []
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig

    problems = []
    for role, values in autoscaling.items():
        try:
            AutoscalingConfig(**values)
        except ValidationError as exc:
            problems += [f"serve.autoscaling.{role}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                         for err in exc.errors()]
        except (TypeError, ValueError) as exc:
            problems.append(f"serve.autoscaling.{role}: {exc}")
    return problems


def _agreement_problems(config: CascadeConfig, modality: str, classes: tuple[str, ...]) -> list[str]:
    """The dataset against the detector and the experts."""
    from cascade import data
    from cascade.detectors import MODALITY, ONE_CLASS

    dataset = config.dataset
    shown = dataset.path if dataset.name in data.FILE_FORMATS else dataset.name
    problems = []
    detector = config.detector
    if MODALITY[detector.kind] != modality:
        fitting = ", ".join(sorted(kind for kind, takes in MODALITY.items() if takes == modality))
        problems.append(f"detector.kind: '{detector.kind}' takes {_WHAT[MODALITY[detector.kind]]}, but dataset "
                        f"'{shown}' holds {_WHAT[modality]}; for {_WHAT[modality]} use one of {fitting}")
    if detector.kind == "pyod":
        from cascade.detectors.pyod import check_model_name

        try:
            check_model_name(detector.params.get("model", "ECOD"))
        except ValueError as exc:
            problems.append(str(exc))
    if (detector.one_class or detector.kind in ONE_CLASS) and len(classes) != 2:
        problems.append(f"detector.kind: '{detector.kind}' learns from normal samples only and needs two classes, "
                        f"but dataset '{shown}' has {len(classes)} ({', '.join(classes)}); set dataset.positive_label "
                        "to the anomaly class, or use a supervised detector")
    for field, expert in checked_experts(config):
        if expert is not None:
            problems += _expert_problems(field, expert, modality, classes, shown)
    return problems


def budget_problems(config: CascadeConfig) -> list[str]:
    """A budget the app could not serve as certified: a hard cap below the target rate, or a hard cap on
    a certificate about accepted answers that the config does not say may override it.

    >>> from cascade.config import CascadeConfig
    >>> CascadeConfig.from_dict({"dataset": {"name": "spamassassin"},
    ...                          "budget": {"kind": "rate", "target": 0.2, "hard_cap": 0.1}})
    Traceback (most recent call last):
    ...
    cascade.config.ConfigError: <config>: invalid config
      budget.target: a deferral-rate target of 0.2 is above budget.hard_cap 0.1; the cap would refuse it at serving time (lower the target or raise the cap)
    """
    budget = config.budget
    problems = []
    if budget.kind == "rate" and budget.hard_cap is not None and budget.target > budget.hard_cap:
        problems.append(f"budget.target: a deferral-rate target of {budget.target} is above budget.hard_cap "
                        f"{budget.hard_cap}; the cap would refuse it at serving time (lower the target or raise the cap)")
    if budget.kind == "rate" and budget.target > 1:
        problems.append(f"budget.target: a deferral rate must be in (0, 1], got {budget.target}")
    if budget.kind in ("accepted-error", "joint") and budget.hard_cap is not None and not budget.cap_overrides_certificate:
        problems.append(f"budget.hard_cap: a hard cap makes the small tier answer samples the certified rule defers, "
                        f"which the {budget.kind} certificate does not cover; remove it, or set "
                        f"budget.cap_overrides_certificate: true to serve it with those answers flagged certified: false")
    if budget.kind == "joint" and budget.max_rate is None:
        problems.append("budget.max_rate: a joint budget needs the deferral-rate bound max_rate")
    if budget.kind in ("accepted-error", "joint") and budget.delta is None:
        problems.append(f"budget.delta: a {budget.kind} budget is certified by Learn-then-Test, which needs a failure "
                        "probability (e.g. 0.1)")
    return problems + tenant_problems(config)


def tenant_problems(config: CascadeConfig) -> list[str]:
    """A tenant budget the app could not serve: a target on a budget that is not a rate, a target above
    its cap, a cap on an accepted-error certificate the config does not let a cap override."""
    budget, problems = config.budget, []
    for i, tenant in enumerate(config.serve.tenants):
        where = f"serve.tenants.{i}"
        if tenant.target is not None and budget.kind != "rate":
            problems.append(f"{where}.target: only a rate budget has a deferral-rate target a tenant can set; this "
                            f"app's budget is '{budget.kind}' (its rule is the certified one for every tenant)")
        cap = tenant.hard_cap if tenant.hard_cap is not None else budget.hard_cap
        target = tenant.target if tenant.target is not None else budget.target
        if budget.kind == "rate" and cap is not None and target > cap:
            problems.append(f"{where}.target: {target} is above the tenant's hard cap {cap}")
        if (budget.kind in ("accepted-error", "joint") and tenant.hard_cap is not None
                and not budget.cap_overrides_certificate):
            problems.append(f"{where}.hard_cap: a cap makes the small tier answer what the {budget.kind} certificate "
                            "defers; set budget.cap_overrides_certificate: true to allow it (flagged certified: false)")
    return problems


def _expert_problems(field: str, expert: ExpertConfig, modality: str, classes: tuple[str, ...],
                     shown: str) -> list[str]:
    problems = []
    if len(expert.labels) != len(classes):
        problems.append(f"{field}.labels: {len(expert.labels)} label words {list(expert.labels)} for the "
                        f"{len(classes)} classes of dataset '{shown}' ({', '.join(classes)}); give one word per "
                        "class, in that order")
    if (expert.kind in _IMAGE_EXPERTS) != (modality == "image"):
        if modality == "image":
            problems.append(f"{field}.kind: '{expert.kind}' cannot judge images; use 'cnn' for dataset '{shown}'")
        else:
            problems.append(f"{field}.kind: '{expert.kind}' judges images, but dataset '{shown}' holds "
                            f"{_WHAT[modality]}; use an LLM expert or 'knn-vote'")
    return problems


def tier_problems(config: CascadeConfig) -> list[str]:
    """``tiers`` and the ``chain`` budget: tiers that disagree with each other (names, label words) or with the
    sections that describe one expert, and a chain budget that could not be certified as stated.

    >>> from cascade.config import CascadeConfig
    >>> CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "budget": {"kind": "chain", "delta": 0.1},
    ...                          "tiers": [{"name": "vote", "expert": {"kind": "knn-vote", "shots": 4}}]})
    Traceback (most recent call last):
    ...
    cascade.config.ConfigError: <config>: invalid config
      tiers.0.cost_per_call: a chain budget weighs what each tier costs; state this tier's cost_per_call (or its per-token prices)
    """
    from cascade.config.tiers import SMALL_TIER

    budget, tiers, problems = config.budget, config.tiers or [], []
    if config.tiers is not None and budget.kind != "chain":
        problems.append(f"budget.kind: tiers are certified as one rule (a threshold per hop and one to abstain); "
                        f"use a 'chain' budget, not '{budget.kind}'")
    seen: dict[str, int] = {}
    for i, tier in enumerate(tiers):
        if tier.name == SMALL_TIER:
            problems.append(f"tiers.{i}.name: '{SMALL_TIER}' names the small tier (detector); give this tier another name")
        elif tier.name in seen:
            problems.append(f"tiers.{i}.name: '{tier.name}' is also tiers.{seen[tier.name]}'s name; tier names differ")
        seen.setdefault(tier.name, i)
        if tier.expert.labels != tiers[0].expert.labels:
            problems.append(f"tiers.{i}.expert.labels: {list(tier.expert.labels)} differ from tiers.0.expert.labels "
                            f"{list(tiers[0].expert.labels)}; every tier answers with the same words, in the same order")
        if budget.kind == "chain" and not tier.priced:
            problems.append(f"tiers.{i}.cost_per_call: a chain budget weighs what each tier costs; state this tier's "
                            "cost_per_call (or its per-token prices)")
    if tiers:
        if config.expert != tiers[-1].expert:
            problems.append(f"expert: with tiers, the expert is the last tier (tiers.{len(tiers) - 1}.expert); remove "
                            "expert, or make it that tier's")
        if config.control_expert is not None:
            problems.append("control_expert: with tiers every expert is a tier; list the control (e.g. knn-vote) in tiers")
        problems += [f"cost.{name}: with tiers each tier states its own price (tiers.N.{name.replace('expert_', 'cost_')}); "
                     "remove it" for name in ("expert_per_call", "expert_per_1k_prompt_tokens",
                                              "expert_per_1k_completion_tokens")
                     if name in config.cost.model_fields_set
                     and getattr(config.cost, name) != type(config.cost).model_fields[name].default]
    return problems + (chain_budget_problems(config) if budget.kind == "chain" else [])


def chain_budget_problems(config: CascadeConfig) -> list[str]:
    """A chain budget that Learn-then-Test could not certify as stated, or that serving could not keep."""
    from cascade.config.tiers import max_request_cost, served_tiers

    budget, problems = config.budget, []
    if budget.delta is None:
        problems.append("budget.delta: a chain budget is certified by Learn-then-Test, which needs a failure "
                        "probability (e.g. 0.1)")
    if budget.target > 1:
        problems.append(f"budget.target: the error bound of a chain budget is a share in (0, 1], got {budget.target}")
    if budget.hard_cap is not None:
        problems.append("budget.hard_cap: a cap would make a tier answer requests the certified chain rule hands on, "
                        "which its certificate does not cover; remove it")
    problems += [f"serve.tenants.{i}.hard_cap: a cap would make a tier answer what the chain certificate hands on; "
                 "remove it" for i, tenant in enumerate(config.serve.tenants) if tenant.hard_cap is not None]
    problems += [f"serve.tenants.{i}.target: a chain serves its certified rule as it is; a tenant's target would "
                 "not move it: remove it" for i, tenant in enumerate(config.serve.tenants) if tenant.target is not None]
    if config.serve.app_hard_cap is not None:
        problems.append("serve.app_hard_cap: a cap would make a tier answer what the chain certificate hands on; "
                        "remove it")
    if budget.served_rule != "certified":
        problems.append("budget.served_rule: a chain serves its certified rule as it is ('certified'); no controller "
                        "tracks a target along a rule vector")
    if budget.max_abstention is None and budget.abstention_span:
        problems.append("budget.abstention_span: a grid that abstains needs the abstention bound budget.max_abstention")
    least = 1000 * config.cost.small_per_call
    if budget.max_cost_per_1k is not None and budget.max_cost_per_1k <= least:
        problems.append(f"budget.max_cost_per_1k: {budget.max_cost_per_1k:g} is not above what the small tier alone "
                        f"costs per 1k requests ({least:g}, cost.small_per_call); raise it")
    through_all = config.cost.small_per_call + sum(tier.cost_per_call or 0.0 for tier in served_tiers(config))
    if budget.max_request_cost is not None and budget.max_request_cost < through_all:
        problems.append(f"budget.max_request_cost: {budget.max_request_cost:g} is below what a request through every "
                        f"tier costs at least ({through_all:g}); raise it or leave it out")
    elif budget.max_cost_per_1k is not None and max_request_cost(config) <= config.cost.small_per_call:
        problems.append("budget.max_cost_per_1k: cost control needs a request through every tier to cost more than the "
                        "small tier alone; state the tiers' costs")
    return problems
