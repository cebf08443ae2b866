"""The served policy: what the Serve app loads from ``config.artifact_dir`` (the small tier and the
deferral hop) and the online controller it serves the certified rule with.

Layout (each part checksummed by its own manifest)::

    <artifact_dir>/small/   a saved cascade.small.SmallTier (detector + calibrator)
    <artifact_dir>/hop/     a saved policies.Hop (policy + threshold + certificate)
    <artifact_dir>/expert_calibrator/  the expert's calibrator (unless ``expert.calibration`` is none)
    <artifact_dir>/monitor_reference/  the certify part's deferral scores (the exchangeability monitor's)

Everything is loaded and checked in the driver before any replica starts, so a missing, corrupt
or mismatched artifact fails ``build_app`` with the file's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascade.artifact import ArtifactError
from cascade.config import CascadeConfig, ConfigError
from deployments.schemas import Modality

SMALL_DIR = "small"
HOP_DIR = "hop"


@dataclass(frozen=True)
class ServedPolicy:
    """The router's share of the artifact: policy, starting threshold, certificate, labels, modality.

    Verdict labels are ``config.expert.labels``, index for index with the small tier's classes;
    ``n_features`` is the width of the feature rows the detector was fitted on (``None`` for texts).
    """

    policy: Any
    threshold: float
    certificate: dict[str, Any] | None
    label_names: tuple[str, ...]
    modality: Modality
    small_dir: Path
    n_features: int | None = None
    reference: Any = None
    """the certify part's deferral scores (numpy), which the exchangeability monitor compares with"""

    def controller(self, config: CascadeConfig) -> Any:
        """A fresh :class:`~policies.OnlineController` serving the certified rule (threshold and tie rule),
        allowed to move only where the certificate still covers it: rate and cost budgets above the
        certified threshold (cost: never below it), accepted-error and joint budgets among the grid
        rules that passed Learn-then-Test; ``budget.served_rule: certified`` never moves it."""
        from policies.online import OnlineController

        budget, certificate = config.budget, self.certificate
        tie_break = float((certificate or {}).get("tie_break", 1.0))
        by_rules = budget.kind in ("accepted-error", "joint")
        coverage = None if certificate is None else ("rules" if by_rules else "above")
        rules = (certificate or {}).get("passed_rules") if by_rules else None
        return OnlineController(target=target_rate(config, certificate), threshold=self.threshold,
                                learning_rate=budget.learning_rate, hard_cap=budget.hard_cap, window=budget.window,
                                tie_break=tie_break, tie_seed=(certificate or {}).get("tie_seed"),
                                min_threshold=self.threshold if budget.kind == "cost" else None,
                                coverage=coverage, rules=rules, adapt=budget.served_rule == "track")


def tenant_config(config: CascadeConfig, tenant: str | None) -> CascadeConfig:
    """``config`` with ``tenant``'s own budget settings (target, hard cap, window) in ``budget``."""
    if tenant is None:
        return config
    chosen = next((t for t in config.serve.tenants if t.name == tenant), None)
    if chosen is None:
        raise ConfigError(f"serve.tenants: no tenant '{tenant}'")
    own = {key: getattr(chosen, key) for key in ("target", "hard_cap", "window") if getattr(chosen, key) is not None}
    return config.model_copy(update={"budget": config.budget.model_copy(update=own)}) if own else config


def target_rate(config: CascadeConfig, certificate: dict[str, Any] | None) -> float:
    """The deferral rate the controller holds: the budget's target for a rate budget, else the rate
    the tuned threshold achieved on the certify part (at most the hard cap)."""
    if config.budget.kind == "rate":
        return config.budget.target
    if certificate is None or "defer_rate" not in certificate.get("achieved", {}):
        raise ArtifactError(f"a '{config.budget.kind}' budget needs the certificate's achieved defer_rate to serve")
    rate = float(certificate["achieved"]["defer_rate"])
    return rate if config.budget.hard_cap is None else min(rate, config.budget.hard_cap)


def load_served(config: CascadeConfig) -> ServedPolicy:
    """Load and check the artifact in ``config.artifact_dir``."""
    from cascade.small import SmallTier
    from policies.tiers import Hop
    from policies.watch import MONITOR_REFERENCE_DIR, load_reference

    modality = served_modality(config)
    root = Path(config.artifact_dir)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no fitted artifact here (artifact_dir of config '{config.name}')")
    small = SmallTier.load(root / SMALL_DIR)
    hop = Hop.load(root / HOP_DIR)
    expected = getattr(hop.policy, "n_features_in_", None)
    if expected is not None and expected != small.n_features:
        raise ArtifactError(f"{root / HOP_DIR}: the policy was fitted on {expected} feature columns, the small tier "
                            f"in {root / SMALL_DIR} gives {small.n_features}; re-run `cascade tune`")
    if not math.isfinite(hop.threshold):
        raise ArtifactError(f"{root / HOP_DIR}: threshold is {hop.threshold}; serving needs a finite threshold")
    certificate = hop.certificate.model_dump(mode="json") if hop.certificate is not None else None
    expert_calibrator(config)  # the expert replicas load it again: a missing or damaged one fails here first
    reference = load_reference(root / MONITOR_REFERENCE_DIR) if watched(config) else None
    return ServedPolicy(policy=hop.policy, threshold=float(hop.threshold), certificate=certificate,
                        label_names=tuple(config.expert.labels), modality=modality, small_dir=root / SMALL_DIR,
                        reference=reference, n_features=getattr(small.detector, "n_features_in_", None) if modality == "features" else None)


def watched(config: CascadeConfig) -> bool:
    """Whether the app watches its certificate: the decision log and the monitors are both on."""
    return config.serve.decision_log.enabled and config.serve.monitor.enabled


def expert_calibrator(config: CascadeConfig) -> Any:
    """The expert's calibrator saved by ``cascade tune`` (checked against ``config.expert``), or ``None``
    when ``expert.calibration`` is none."""
    from cascade.expert_calibration import EXPERT_CALIBRATOR_DIR, load_expert_calibrator

    if config.expert.calibration == "none":
        return None
    return load_expert_calibrator(Path(config.artifact_dir) / EXPERT_CALIBRATOR_DIR, config.expert,
                                  served_modality(config))


def served_modality(config: CascadeConfig) -> Modality:
    """What samples carry for this config's dataset: texts or feature vectors (images are not served)."""
    from cascade.data import describe

    dataset = config.dataset
    modality, _ = describe(dataset.name, **dataset.loader_options())
    if modality not in ("text", "features"):
        raise ConfigError(f"dataset '{dataset.name}' holds {modality} samples; the Serve app takes text or features")
    return modality  # type: ignore[return-value]
