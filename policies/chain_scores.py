"""Every tier of a chain scored once on the fit and certify parts (and, for the harness, the test part), cached.

The small tier is the harness's (:func:`cascade.small.fit_small_tier`: detector on train, calibrator on
the fit part). Each tier in :func:`cascade.config.served_tiers` judges the held-out evaluation subset
(fit and certify parts together) and, for the harness only, the test evaluation subset, one call each,
cached under the same key the two-tier harness uses (expert fingerprint, prices, data, labelled pool);
every call is billed at the tier's prices whatever its kind (:meth:`cascade.config.TierConfig.call_cost`),
and the answers pass through the tier's calibrator, fitted on the labelled pool judged leave-one-out
(:mod:`cascade.expert_calibration`). Every tier learns from, and retrieves from, the same labelled pool
(:func:`cascade.data.roles.labelled_pool`). A tier's deferral score is Chow's (``1 - max probability``).

:func:`score_held_out_chain` is what ``cascade tune`` reads (the test part is not touched);
:func:`score_chain` adds the test part for the harness.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from cascade.config import CascadeConfig, ExpertConfig, TierConfig, served_tiers
from cascade.config.tiers import SMALL_TIER
from cascade.data import Dataset
from cascade.data.roles import DataRoles, labelled_pool
from cascade.expert_calibration import ExpertCalibration, fit_expert_calibration
from cascade.experts.fingerprint import expert_fingerprint
from cascade.scoring import (TierScores, cached, content_hash, dataset_hash, progress_console, score_expert,
                             score_small, score_with_ray_data)
from cascade.small import SmallTier, fit_small_tier
from policies.held_out import evaluation_index, held_out_evaluation_index
from policies.rules import ConfidencePolicy


@dataclass(frozen=True)
class ChainPart:
    """One part as every tier scored it, tiers in chain order (the small tier first)."""

    tiers: dict[str, TierScores]

    def __len__(self) -> int:
        return len(next(iter(self.tiers.values())).y)

    @property
    def names(self) -> list[str]:
        return list(self.tiers)

    @property
    def scores(self) -> np.ndarray:
        """Deferral score of each tier ``(n, K)``: Chow's ``1 - max calibrated probability``."""
        return np.column_stack([ConfidencePolicy(n_classes=s.probs.shape[1]).score(s.probs)
                                for s in self.tiers.values()])

    @property
    def correct(self) -> np.ndarray:
        """Whether each tier's answer is right ``(n, K)``."""
        return np.column_stack([s.correct for s in self.tiers.values()])

    @property
    def costs(self) -> np.ndarray:
        """What a call to each tier costs on each sample ``(n, K)``."""
        return np.column_stack([np.asarray(s.cost, dtype=float) for s in self.tiers.values()])

    def subset(self, index: np.ndarray) -> ChainPart:
        return ChainPart({name: s.subset(index) for name, s in self.tiers.items()})

    def drop(self, tier: str) -> ChainPart:
        """The same part without ``tier`` (a cut of the chain)."""
        return ChainPart({name: s for name, s in self.tiers.items() if name != tier})

    def calibrated(self, calibrations: dict[str, ExpertCalibration]) -> ChainPart:
        """The same part with each calibrated tier's probabilities passed through its calibrator."""
        return ChainPart({name: calibrations[name].apply(s) if name in calibrations else s
                          for name, s in self.tiers.items()})


@dataclass(frozen=True)
class HeldOutChain:
    """The scored ``fit`` and ``certify`` parts, the small tier and tier calibrators behind them."""

    fit: ChainPart
    certify: ChainPart
    small_tier: SmallTier
    calibrations: dict[str, ExpertCalibration]
    """per calibrated tier: its fitted calibrator (tiers with ``calibration: none`` are absent)"""
    from_cache: dict[str, bool]
    """per tier: whether its scores came from the cache (no model ran)"""
    pool_size: int
    small_fit_s: float


@dataclass(frozen=True)
class ChainScores(HeldOutChain):
    """:class:`HeldOutChain` and the scored ``test`` part, with each calibrator's report on it."""

    test: ChainPart
    calibration: dict[str, dict[str, Any]]
    """per calibrated tier: the pool it judged and the test accuracy / ECE before and after"""


def score_held_out_chain(config: CascadeConfig, roles: DataRoles, refresh: bool = False,
                         progress: bool = True) -> HeldOutChain:
    """Score the small tier and every tier of ``config`` on the held-out evaluation subset (fit and certify)."""
    return _score(config, roles, {}, refresh, progress)[0]


def score_chain(config: CascadeConfig, roles: DataRoles, refresh: bool = False, progress: bool = True) -> ChainScores:
    """Score the small tier and every tier of ``config`` on the held-out and test evaluation subsets."""
    seed, cap = config.experiment.seed, config.experiment.max_scored_per_split
    held, raw = _score(config, roles, {"test": roles.test.subset(evaluation_index(roles.test, cap, seed))}, refresh,
                       progress)
    reports = {name: calibration.report(raw["test"].tiers[name]) for name, calibration in held.calibrations.items()}
    return ChainScores(**{field.name: getattr(held, field.name) for field in fields(held)},
                       test=raw["test"].calibrated(held.calibrations), calibration=reports)


def _score(config: CascadeConfig, roles: DataRoles, others: dict[str, Dataset], refresh: bool, progress: bool
           ) -> tuple[HeldOutChain, dict[str, ChainPart]]:
    """The held-out parts, calibrated, and each of ``others`` scored by every tier, not calibrated; each tier's
    engine starts at most once for all of them."""
    seed, cap = config.experiment.seed, config.experiment.max_scored_per_split
    held_index = held_out_evaluation_index(roles, cap, seed)
    datasets = {"held_out": roles.calibration.subset(held_index), **others}
    pool = labelled_pool(config, roles.train)
    small_tier, small_fit_s = fit_small_tier(config, roles)
    small_cost = config.cost.small_per_call
    scored = {part: {SMALL_TIER: score_small(small_tier, dataset, small_cost)} for part, dataset in datasets.items()}
    calibrations, from_cache = {}, {}
    for tier in served_tiers(config):
        priced = config.model_copy(update={"cost": tier.cost_model(small_cost)})  # the tier bills at its own prices
        engines: dict[str, Any] = {}
        hits = []
        try:
            for part, dataset in datasets.items():
                scores, hit = _tier_scores(priced, tier, dataset, pool, engines, refresh, progress)
                scored[part][tier.name] = _billed(tier, scores)
                hits.append(hit)
            fitted = fit_expert_calibration(priced, tier.name, tier.expert, pool,
                                            lambda: _engine(priced, tier.expert, pool, engines), refresh, progress)
        finally:
            for expert in engines.values():
                expert.close()  # one engine at a time: an LLM's memory is freed before the next tier's starts
        from_cache[tier.name] = all(hits)
        if fitted is not None:
            calibrations[tier.name] = fitted
    certify = np.isin(held_index, roles.certify_index)
    held_part = ChainPart(scored["held_out"]).calibrated(calibrations)
    held = HeldOutChain(fit=held_part.subset(~certify), certify=held_part.subset(certify), small_tier=small_tier,
                        calibrations=calibrations, from_cache=from_cache, pool_size=len(pool),
                        small_fit_s=small_fit_s)
    return held, {part: ChainPart(scored[part]) for part in others}


def _billed(tier: TierConfig, scores: TierScores) -> TierScores:
    """The scores with each call billed at the tier's prices (:meth:`~cascade.config.TierConfig.call_cost`)."""
    return replace(scores, cost=np.asarray(tier.call_cost(scores.prompt_tokens, scores.completion_tokens), dtype=float)
                   * np.ones(len(scores.y)))


def _tier_scores(config: CascadeConfig, tier: TierConfig, dataset: Dataset, pool: Dataset, engines: dict[str, Any],
                 refresh: bool, progress: bool) -> tuple[TierScores, bool]:
    """The tier's raw scores on ``dataset``: from the cache, or judged now (and cached)."""
    fingerprint = expert_fingerprint(tier.expert, dataset.modality)
    key = content_hash("expert", fingerprint, config.cost.model_dump(), dataset_hash(dataset), dataset_hash(pool))

    def judge() -> TierScores:
        if progress:
            progress_console().print(f"scoring {tier.name} ({tier.expert.display_name}) on {len(dataset)} samples; "
                                     "cached for later runs", highlight=False)
        if config.experiment.scoring == "ray-data":
            cost, expert_config = config.cost, tier.expert
            return score_with_ray_data(lambda: _make(expert_config, cost, pool), dataset, tier.name,
                                       concurrency=config.experiment.ray_data_concurrency,
                                       num_cpus=config.experiment.ray_data_num_cpus)
        return score_expert(_engine(config, tier.expert, pool, engines), dataset, tier.name, progress=progress)

    return cached(key, judge, refresh=refresh, fingerprint=fingerprint, ids=dataset.ids)


def _engine(config: CascadeConfig, expert_config: ExpertConfig, pool: Dataset, engines: dict[str, Any]) -> Any:
    """The tier's expert, made on first need and kept in ``engines`` for its next part."""
    if "expert" not in engines:
        engines["expert"] = _make(expert_config, config.cost, pool)
    return engines["expert"]


def _make(expert_config: ExpertConfig, cost: Any, pool: Dataset) -> Any:
    from cascade.experts import make_expert

    return make_expert(expert_config, cost=cost, pool=pool)
