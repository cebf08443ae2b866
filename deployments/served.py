"""The served policy: what the Serve app loads from ``config.artifact_dir`` (the small tier and the
deferral hop) and the online controller it serves the certified rule with.

Layout (each part checksummed by its own manifest)::

    <artifact_dir>/small/   a saved cascade.small.SmallTier (detector + calibrator)
    <artifact_dir>/hop/     a saved policies.Hop (policy + threshold + certificate)
    <artifact_dir>/expert_calibrator/  the expert's calibrator (unless ``expert.calibration`` is none)
    <artifact_dir>/monitor_reference/  the certify part's deferral scores (the exchangeability monitor's)

A config with ``tiers`` (a ``chain`` budget) has ``chain/`` (the certified rule,
:class:`policies.chain_rule.ChainRule`) instead of ``hop/``, and ``expert_calibrators/<tier>/`` per tier
(:mod:`policies.tune_chain`). The small tier's hop is then Chow's score against the rule's first
threshold, served fixed (``budget.served_rule: certified``); :mod:`deployments.chain` climbs the rest.

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
    chain: Any = None
    """the certified :class:`~policies.chain_rule.ChainRule` of a config with ``tiers`` (None: two tiers)"""

    def controller(self, config: CascadeConfig) -> Any:
        """A fresh :class:`~policies.OnlineController` serving the certified rule (threshold and tie rule),
        allowed to move only where the certificate still covers it: rate and cost budgets above the
        certified threshold (cost: never below it), accepted-error and joint budgets among the grid
        rules that passed Learn-then-Test; ``budget.served_rule: certified`` never moves it."""
        from policies.online import OnlineController
        from policies.ties import NO_TIE_BREAK

        budget, certificate = config.budget, self.certificate
        if self.chain is not None:  # the small tier's threshold of the certified rule, never moved
            return OnlineController(target=target_rate(config, certificate), threshold=self.threshold,
                                    hard_cap=budget.hard_cap, window=budget.window, coverage="rules",
                                    rules=[(self.threshold, NO_TIE_BREAK)], adapt=False)
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
    the tuned threshold achieved on the certify part (at most the hard cap; a chain: the small tier's)."""
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
    if config.tiers is not None:
        return load_served_chain(config, small, modality)
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


def load_served_chain(config: CascadeConfig, small: Any, modality: Modality) -> ServedPolicy:
    """A chain artifact: the rule (checked against the config's tiers), each tier's calibrator, the small tier's
    hop as Chow's score against the rule's first threshold."""
    from cascade.config import served_tiers
    from policies.chain_rule import CHAIN_DIR, ChainRule
    from policies.rules import ConfidencePolicy

    root = Path(config.artifact_dir)
    tiers = [tier.name for tier in served_tiers(config)]
    chain = ChainRule.load(root / CHAIN_DIR, tiers)
    for name in tiers:  # the expert replicas load them again: a missing or damaged one fails here first
        expert_calibrator(config, name)
    first = float(chain.rule[0])
    threshold = first if math.isfinite(first) else math.copysign(1.0, first)  # Chow's scores lie in [0, 1)
    certificate = chain.certificate.model_dump(mode="json")
    return ServedPolicy(policy=ConfidencePolicy(n_classes=len(config.expert.labels)), threshold=threshold,
                        certificate=certificate, label_names=tuple(config.expert.labels), modality=modality,
                        small_dir=root / SMALL_DIR, chain=chain,
                        n_features=getattr(small.detector, "n_features_in_", None) if modality == "features" else None)


def watched(config: CascadeConfig) -> bool:
    """Whether the app watches its certificate: the decision log and the monitors are both on (a chain's
    certificate is not watched: its monitors are not built yet, and ``GET /v1/budget`` says so)."""
    return config.serve.decision_log.enabled and config.serve.monitor.enabled and config.tiers is None


def tier_view(config: CascadeConfig, tier: str | None) -> CascadeConfig:
    """``config`` as one tier's expert replica sees it: that tier's expert and prices in ``expert`` and ``cost``
    (``tier`` None: the config itself)."""
    from cascade.config import served_tiers

    if tier is None:
        return config
    chosen = next((t for t in served_tiers(config) if t.name == tier), None)
    if chosen is None:
        raise ConfigError(f"tiers: no tier '{tier}' (the config has {[t.name for t in served_tiers(config)]})")
    return config.model_copy(update={"expert": chosen.expert, "cost": chosen.cost_model(config.cost.small_per_call)})


def expert_calibrator(config: CascadeConfig, tier: str | None = None) -> Any:
    """The expert's calibrator saved by ``cascade tune`` (checked against the expert's config; ``tier``: that
    chain tier's), or ``None`` when its ``calibration`` is none."""
    from cascade.expert_calibration import EXPERT_CALIBRATOR_DIR, load_expert_calibrator
    from policies.chain_rule import EXPERT_CALIBRATORS_DIR

    expert = tier_view(config, tier).expert
    if expert.calibration == "none":
        return None
    directory = (Path(config.artifact_dir) / EXPERT_CALIBRATOR_DIR if tier is None
                 else Path(config.artifact_dir) / EXPERT_CALIBRATORS_DIR / tier)
    return load_expert_calibrator(directory, expert, served_modality(config))


def served_modality(config: CascadeConfig) -> Modality:
    """What samples carry for this config's dataset: texts or feature vectors (images are not served)."""
    from cascade.data import describe

    dataset = config.dataset
    modality, _ = describe(dataset.name, **dataset.loader_options())
    if modality not in ("text", "features"):
        raise ConfigError(f"dataset '{dataset.name}' holds {modality} samples; the Serve app takes text or features")
    return modality  # type: ignore[return-value]
