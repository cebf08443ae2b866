"""Cross-field checks of a :class:`~cascade.config.CascadeConfig`, run when it is validated.

Each problem is one line that starts with the field path to change and says how:

>>> from cascade.config import CascadeConfig, ConfigError
>>> CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "detector": {"kind": "isolation-forest"}})
Traceback (most recent call last):
...
cascade.config.ConfigError: <config>: invalid config
  detector.kind: 'isolation-forest' takes feature rows, but dataset 'spamassassin' holds text; for text use one of embedding-knn, embedding-lr, minilm-finetune, tfidf-knn, tfidf-lr
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cascade.config import CascadeConfig, ExpertConfig

_WHAT = {"text": "text", "features": "feature rows", "image": "images"}
_IMAGE_EXPERTS = ("cnn",)


def config_problems(config: CascadeConfig) -> list[str]:
    """Every disagreement between the dataset, the detector and the experts (empty when they agree)."""
    from cascade import data
    from cascade.detectors import MODALITY, ONE_CLASS

    dataset = config.dataset
    shown = dataset.path if dataset.name in data.FILE_FORMATS else dataset.name
    try:
        modality, classes = data.describe(dataset.name, **dataset.loader_options())
    except (ValueError, OSError) as exc:
        message = str(exc)
        if not message.startswith("dataset."):
            field = "dataset.name" if dataset.name not in data.FILE_FORMATS else "dataset.path"
            message = f"{field}: {message}"
        return [message]
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
    for field, expert in (("expert", config.expert), ("control_expert", config.control_expert)):
        if expert is not None:
            problems += _expert_problems(field, expert, modality, classes, shown)
    return problems + budget_problems(config)


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
