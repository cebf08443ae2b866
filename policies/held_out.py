"""The held-out parts as every tier scored them, and the deferral policies fitted on them.

The experts score the test evaluation subset, and the held-out (fit ∪ certify) evaluation subset
only where something reads their outputs there (:func:`held_out_needs_experts`: a policy that
learns from them, a cost budget that certifies on them); each subset once, in one call, cached by
content hash. The held-out scores are cut into the ``fit`` part (policies learn here) and the
``certify`` part (budget tuners certify here) by the roles of :func:`cascade.data.roles.load_roles`.
``experiment.max_scored_per_split`` caps both subsets. A learned policy may also learn from the
cross-fitted training outcomes (:mod:`cascade.crossfit`) after the fit part's (:func:`learning_set`).
Every expert's probabilities pass through its calibrator (``expert.calibration``), fitted on the
labelled pool judged leave-one-out (:mod:`cascade.expert_calibration`), before anything reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cascade.config import CascadeConfig, ExpertConfig
from cascade.crossfit import CrossFit
from cascade.data import Dataset
from cascade.data.dataset import stratified_subsample
from cascade.data.roles import DataRoles, labelled_pool
from cascade.expert_calibration import fit_expert_calibration
from cascade.experts.fingerprint import expert_fingerprint
from cascade.scoring import (TierScores, cached, content_hash, dataset_hash, progress_console, score_expert,
                             score_small, score_with_ray_data)
from policies.ties import tie_keys


NEEDS_EXPERT = ("posthoc", "learned")
"""policies that learn from the expert's outcomes on the fit part (the rules only rank the small tier's outputs)"""


def held_out_needs_experts(policies: Iterable[str], budget_kind: str) -> bool:
    """Whether the experts must score the held-out (fit and certify) parts: a policy in ``policies``
    learns from their outcomes there, or a ``cost`` budget certifies on their per-call cost. Rule
    policies with rate, accepted-error or joint budgets read only the small tier there.

    >>> held_out_needs_experts(["confidence", "margin"], "rate"), held_out_needs_experts(["learned"], "rate")
    (False, True)
    """
    return budget_kind == "cost" or any(kind in NEEDS_EXPERT for kind in policies)


def harness_needs_experts(config: CascadeConfig) -> bool:
    """:func:`held_out_needs_experts` for the harness: the swept policies, the configured one (budget
    adherence runs it) and the configured budget."""
    return held_out_needs_experts([*config.experiment.policies, config.policy.kind], config.budget.kind)


@dataclass
class Scored:
    """Everything the sweeps need, for one part."""

    small: TierScores
    experts: dict[str, TierScores]
    tie_keys: np.ndarray | None = None
    """per sample: the key that breaks ties at the threshold (:func:`policies.ties.tie_keys`)"""
    from_cache: dict[str, bool] = field(default_factory=dict)
    """per expert: whether its scores came from the on-disk cache (no model ran)"""

    def __len__(self) -> int:
        return len(self.small.y)

    def subset(self, index: np.ndarray) -> Scored:
        return Scored(self.small.subset(index), {name: s.subset(index) for name, s in self.experts.items()},
                      None if self.tie_keys is None else self.tie_keys[index], dict(self.from_cache))

    def calibrated(self, calibrations: dict[str, Any]) -> Scored:
        """The same part with each calibrated expert's probabilities passed through its calibrator."""
        experts = {name: calibrations[name].apply(s) if name in calibrations else s for name, s in self.experts.items()}
        return replace(self, experts=experts)


@dataclass(frozen=True)
class HeldOut:
    """The scored ``fit``, ``certify`` and ``test`` parts."""

    fit: Scored
    certify: Scored
    test: Scored
    expert_calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    """per calibrated expert: :meth:`cascade.expert_calibration.ExpertCalibration.report`"""
    calibrations: dict[str, Any] = field(default_factory=dict)
    """per calibrated expert: the fitted :class:`~cascade.expert_calibration.ExpertCalibration`"""

    def sizes(self) -> dict[str, int]:
        return {"fit": len(self.fit), "certify": len(self.certify), "test": len(self.test)}

    def expert_parts(self) -> list[str]:
        """The parts the experts scored."""
        return [name for name in ("fit", "certify", "test") if getattr(self, name).experts]


def evaluation_index(dataset: Dataset, cap: int | None, seed: int) -> np.ndarray:
    """The samples the experts score: all of them, or a stratified ``cap`` of them."""
    if cap is None or cap >= len(dataset):
        return np.arange(len(dataset))
    return stratified_subsample(dataset.y, dataset.groups, cap, seed)


def held_out_evaluation_index(roles: DataRoles, cap: int | None, seed: int) -> np.ndarray:
    """The held-out samples the harness scores (indices into ``roles.calibration``, sorted): all of
    them, or ``cap`` of them split between the fit and the certify part in proportion to their sizes,
    each part subsampled on its own by a seeded uniform draw: a uniform subsample of the certify
    part is still exchangeable with served traffic (a stratified one would not be)."""
    n = len(roles.fit_index) + len(roles.certify_index)
    if cap is None or cap >= n:
        return np.arange(len(roles.calibration))
    n_fit = int(round(cap * len(roles.fit_index) / n))
    rng = np.random.default_rng(seed)
    chosen = [index[np.sort(rng.permutation(len(index))[:size])]
              for index, size in ((roles.fit_index, n_fit), (roles.certify_index, cap - n_fit))]
    return np.sort(np.concatenate(chosen))


def score_held_out(config: CascadeConfig, roles: DataRoles, small_tier: Any, refresh: bool = False,
                   progress: bool = True, held_out_experts: bool = True) -> HeldOut:
    """Small tier on the fit, certify and test evaluation subsets; expert and control expert on the
    test subset, and on the fit and certify subsets when ``held_out_experts``."""
    seed, cap = config.experiment.seed, config.experiment.max_scored_per_split
    held_index = held_out_evaluation_index(roles, cap, seed)
    pool = labelled_pool(config, roles.train)  # the labels the setting may use: the experts' examples too
    engines: dict[str, Any] = {}  # one expert (one engine) per tier for the whole run, made on a cache miss
    try:
        held = _score(config, roles.calibration.subset(held_index), pool, small_tier, refresh, progress,
                      engines, with_experts=held_out_experts)
        test = _score(config, roles.test.subset(evaluation_index(roles.test, cap, seed)), pool, small_tier,
                      refresh, progress, engines)
        calibrations = {tier: calibration for tier, expert_config in expert_tiers(config).items()
                        if (calibration := fit_expert_calibration(
                            config, tier, expert_config, pool,
                            lambda t=tier, ec=expert_config: _engine(config, ec, pool, t, engines), refresh, progress))}
    finally:
        for expert in engines.values():
            expert.close()
    certify = np.isin(held_index, roles.certify_index)
    handed_over = least_confident(test.small.probs, DEFERRED_SHARE)
    reports = {tier: calibration.report(test.experts[tier], handed_over) for tier, calibration in calibrations.items()}
    held, test = held.calibrated(calibrations), test.calibrated(calibrations)
    return HeldOut(fit=held.subset(~certify), certify=held.subset(certify), test=test, expert_calibration=reports,
                   calibrations=calibrations)


DEFERRED_SHARE = 0.2
"""the share of test samples, least confident first, on which calibrators are compared (where the expert answers)"""


def least_confident(probs: np.ndarray, share: float) -> np.ndarray:
    """Boolean mask of the ``share`` of rows with the lowest top-class probability (Chow's rule; ties by index)."""
    order = np.argsort(probs.max(axis=1), kind="stable")
    mask = np.zeros(len(probs), dtype=bool)
    mask[order[: int(np.ceil(share * len(probs)))]] = True
    return mask


def expert_tiers(config: CascadeConfig) -> dict[str, ExpertConfig]:
    """The expert tiers an experiment scores: ``expert``, and ``control`` when configured."""
    return {"expert": config.expert, **({"control": config.control_expert} if config.control_expert else {})}


def _score(config: CascadeConfig, dataset: Dataset, pool: Dataset, small_tier: Any, refresh: bool,
           progress: bool, engines: dict[str, Any], with_experts: bool = True) -> Scored:
    experts = expert_tiers(config) if with_experts else {}
    by_expert, from_cache = {}, {}
    for tier, expert_config in experts.items():
        fingerprint = expert_fingerprint(expert_config, dataset.modality)
        key = content_hash("expert", fingerprint, config.cost.model_dump(), dataset_hash(dataset), dataset_hash(pool))
        by_expert[tier], from_cache[tier] = cached(
            key, lambda ec=expert_config, t=tier: _score_with_expert(config, ec, pool, dataset, t, progress, engines),
            refresh=refresh, fingerprint=fingerprint, ids=dataset.ids,
        )
    seed = config.budget.tie_seed
    return Scored(small=score_small(small_tier, dataset, config.cost.small_per_call), experts=by_expert,
                  tie_keys=None if seed is None else tie_keys(dataset.X, seed), from_cache=from_cache)


def _score_with_expert(config: CascadeConfig, expert_config: ExpertConfig, pool: Dataset, dataset: Dataset,
                       tier: str, progress: bool, engines: dict[str, Any]) -> TierScores:
    """Score ``dataset`` with the tier's expert, made on first need and kept in ``engines`` for the next split."""
    from cascade.experts import make_expert

    if progress:
        progress_console().print(f"scoring {tier} ({expert_config.display_name}) on {len(dataset)} samples; "
                                 "cached for later runs", highlight=False)
    if config.experiment.scoring == "ray-data":
        cost = config.cost
        return score_with_ray_data(lambda: make_expert(expert_config, cost=cost, pool=pool), dataset, tier,
                                   concurrency=config.experiment.ray_data_concurrency,
                                   num_cpus=config.experiment.ray_data_num_cpus)
    return score_expert(_engine(config, expert_config, pool, tier, engines), dataset, tier, progress=progress)


def _engine(config: CascadeConfig, expert_config: ExpertConfig, pool: Dataset, tier: str,
            engines: dict[str, Any]) -> Any:
    """The tier's expert, made on first need and kept in ``engines`` for the next split."""
    from cascade.experts import make_expert

    if tier not in engines:
        engines[tier] = make_expert(expert_config, cost=config.cost, pool=pool)
    return engines[tier]


def policy_scores(kind: str, fit: Scored, scored: Scored, expert: str, seed: int = 0) -> np.ndarray:
    """Fit a deferral policy on the ``fit`` part; return its scores on ``scored``."""
    from policies import make_policy

    n_classes = fit.small.probs.shape[1]
    policy = make_policy(kind, seed=seed) if kind == "random" else make_policy(kind, n_classes=n_classes)
    if expert in fit.experts:
        fit_expert = fit.experts[expert]
        policy.fit(fit.small.features, fit.small.correct, fit_expert.correct, cost=varying_cost(fit_expert.cost))
    elif kind in NEEDS_EXPERT:
        raise ValueError(f"the {kind!r} policy learns from the {expert}'s outcomes on the fit part, which it did "
                         "not score (experiment.policies / policy.kind decide; see held_out_needs_experts)")
    else:  # a rule learns nothing from outcomes: the small tier's stand in for the expert's
        policy.fit(fit.small.features, fit.small.correct, fit.small.correct)
    if kind == "oracle":
        return policy.score(scored.small.features, small_correct=scored.small.correct,
                            expert_correct=scored.experts[expert].correct)
    return policy.score(scored.small.features)


def varying_cost(cost: np.ndarray) -> np.ndarray | None:
    """Per-sample expert cost for a cost-aware policy, or None where it cannot change the order
    (constant cost) or cannot be divided by (a free expert)."""
    return cost if len(cost) and np.all(cost > 0) and np.ptp(cost) > 0 else None


def with_training(fit: Scored, training: CrossFit | None) -> Scored:
    """The fit-part outcomes followed by the cross-fitted training outcomes (what a learned policy fits on)."""
    if training is None:
        return fit

    def joined(a: TierScores, b: TierScores) -> TierScores:
        arrays = {name: np.concatenate([getattr(a, name), getattr(b, name)]) for name in
                  ("ids", "y", "probs", "cost", "latency_s", "prompt_tokens", "completion_tokens")}
        features = None if a.features is None else np.concatenate([a.features, b.features])
        return TierScores(tier=a.tier, features=features, **arrays)

    return Scored(small=joined(fit.small, training.small),
                  experts={name: joined(s, training.experts[name]) for name, s in fit.experts.items()})


def learning_set(fit: Scored, training: CrossFit | None, expert: str) -> dict[str, Any]:
    """``LearnedPolicy.fit`` arguments: the fit part, then the cross-fitted training outcomes (if any); only
    the fit part's rows are marked as drawn like serving traffic (the policy chooses on those)."""
    joined = with_training(fit, training)
    outcomes = joined.experts[expert]
    return {"features": joined.small.features, "small_correct": joined.small.correct,
            "expert_correct": outcomes.correct, "cost": varying_cost(outcomes.cost),
            "exchangeable": np.arange(len(joined.small.y)) < len(fit.small.y)}
