"""Cross-fitting: out-of-fold small-tier and expert outputs over the train split, for a learned policy.

The calibration split holds a few hundred to a few thousand samples, few of them where deferring
helps. The train split is larger, but the small tier has seen it. Cross-fitting cuts the labelled
training samples into ``folds``; for each fold it refits the small tier (detector on the other
folds, calibrator on the fit part, as the real tier) and an expert whose labelled pool is
the other folds (retrieved few-shot examples, the kNN vote's neighbours, the CNN's training set),
then scores the held-out fold with both. So no sample is judged by a model that learned from it,
and a few-shot expert never retrieves the sample it is judging as its own example.

The input-view columns come from the final small tier (fitted on the whole train split): a
per-fold PCA would put each fold in its own coordinates. Distances to the training data come from
each fold's tier (the final one would find every training sample at distance 0).

Expert outputs are cached like every other score (:func:`cascade.scoring.cached`), keyed by
the fold's pool and samples; the extra expert calls (and their tokens and cost) are reported in
:attr:`CrossFit.expert_usage`. Only a learned policy needs them: :func:`cross_fitted` runs it
when the config asks for it (``policy.kind: learned`` with ``policy.crossfit_folds`` > 0).

>>> fit = crossfit(config, roles, small_tier, folds=5)        # doctest: +SKIP
>>> fit.small.features.shape[0] == len(roles.train)           # doctest: +SKIP
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from cascade.config import CascadeConfig, ExpertConfig
from cascade.data import Dataset
from cascade.data.roles import DataRoles, labelled_pool
from cascade.experts.fingerprint import expert_fingerprint
from cascade.scoring import TierScores, cached, content_hash, dataset_hash, score_expert, score_small


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold outputs over the labelled training samples, aligned row by row."""

    small: TierScores
    experts: dict[str, TierScores]
    folds: int

    @property
    def expert_usage(self) -> dict[str, dict[str, float]]:
        """Per expert: the extra calls cross-fitting made, their tokens and their cost units."""
        return {name: {"calls": int(len(s.y)), "prompt_tokens": int(s.prompt_tokens.sum()),
                       "completion_tokens": int(s.completion_tokens.sum()), "cost": float(s.cost.sum())}
                for name, s in self.experts.items()}

    def calibrated(self, calibrations: dict[str, Any]) -> CrossFit:
        """The same outputs with each calibrated expert's probabilities passed through its calibrator
        (:class:`cascade.expert_calibration.ExpertCalibration`), as the held-out parts are."""
        experts = {name: calibrations[name].apply(s) if name in calibrations else s for name, s in self.experts.items()}
        return replace(self, experts=experts)


def cross_fitted(config: CascadeConfig, roles: DataRoles, small_tier: Any, progress: bool,
                 calibrations: dict[str, Any] | None = None) -> CrossFit | None:
    """Out-of-fold training outcomes for a configured learned policy (``policy.crossfit_folds`` > 0), else None;
    rule policies spend no extra expert calls. The experts' probabilities pass through ``calibrations``
    (the held-out parts' expert calibrators), so the policy learns from the outcomes it will serve."""
    if config.policy.kind != "learned" or not config.policy.crossfit_folds:
        return None
    experts = {"expert": config.expert, **({"control": config.control_expert} if config.control_expert else {})}
    training = crossfit(config, roles, small_tier, folds=config.policy.crossfit_folds, experts=experts,
                        progress=progress)
    return training.calibrated(calibrations or {})


def crossfit(config: CascadeConfig, roles: DataRoles, final_small: Any, folds: int = 5,
             experts: dict[str, ExpertConfig] | None = None, progress: bool = False) -> CrossFit:
    """Out-of-fold small-tier features and expert outputs over the labelled training samples."""
    from cascade.small import SmallTier

    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    pool = labelled_pool(config, roles.train)
    experts = experts or {"expert": config.expert}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.experiment.seed)
    small_parts: list[TierScores] = []
    expert_parts: dict[str, list[TierScores]] = {name: [] for name in experts}
    order = []
    for rest, held in splitter.split(np.zeros(len(pool)), pool.y):
        others, fold = pool.subset(rest), pool.subset(held)
        tier = SmallTier.from_config(config)
        tier.input_view = 0  # the final tier's view, see the module docs
        tier.fit(others, roles.fit)
        tier.view_ = final_small.view_
        small_parts.append(score_small(tier, fold, config.cost.small_per_call))
        for name, expert_config in experts.items():
            fingerprint = expert_fingerprint(expert_config, fold.modality)
            key = content_hash("crossfit-expert", fingerprint, config.cost.model_dump(), dataset_hash(fold),
                               dataset_hash(others))
            scores, _ = cached(key, lambda ec=expert_config, o=others, f=fold: _score(config, ec, o, f, name, progress),
                               fingerprint=fingerprint, ids=fold.ids)
            expert_parts[name].append(scores)
        order.append(held)
    index = np.argsort(np.concatenate(order), kind="stable")
    return CrossFit(small=_stack(small_parts, index),
                    experts={name: _stack(parts, index) for name, parts in expert_parts.items()}, folds=folds)


def _score(config: CascadeConfig, expert_config: ExpertConfig, pool: Dataset, fold: Dataset, tier: str,
           progress: bool) -> TierScores:
    from cascade.experts import make_expert

    expert = make_expert(expert_config, cost=config.cost, pool=pool)
    try:
        return score_expert(expert, fold, tier, progress=progress)
    finally:
        expert.close()


def _stack(parts: list[TierScores], index: np.ndarray) -> TierScores:
    """Concatenate per-fold scores and put them back in the pool's order."""
    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[index]

    features = None if parts[0].features is None else joined("features")
    return TierScores(tier=parts[0].tier, ids=joined("ids"), y=joined("y"), probs=joined("probs"), cost=joined("cost"),
                      latency_s=joined("latency_s"), prompt_tokens=joined("prompt_tokens"),
                      completion_tokens=joined("completion_tokens"), features=features,
                      meta={"folds": len(parts)})
