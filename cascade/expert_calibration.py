"""A config's expert calibrators: fitted on the labelled pool judged leave-one-out (cached like every
tier score), applied to cached expert scores, and reported before / after.

The pool's scores are cached under their own key (the expert's fingerprint, the cost model and the
pool's content), so the harness, ``cascade tune`` and the demo judge the pool once. The calibrator
itself (:mod:`cascade.experts.calibrated`) is refitted from them each time: it costs milliseconds.

>>> calibration = fit_expert_calibration(config, "expert", config.expert, pool, lambda: expert)  # doctest: +SKIP
>>> calibrated_test = calibration.apply(raw_test_scores)                                         # doctest: +SKIP
>>> calibration.report(raw_test_scores)["test"]["accuracy_after"]                                # doctest: +SKIP
0.943
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cascade.calibration import CalibratorBase, ece
from cascade.config import CascadeConfig, ExpertConfig
from cascade.data import Dataset
from cascade.experts.calibrated import FITTED_ON, CalibrationUsage, fit_expert_calibrator, leaving_out_self
from cascade.experts.fingerprint import expert_fingerprint
from cascade.scoring import TierScores, cached, content_hash, dataset_hash, progress_console, score_expert

EXPERT_CALIBRATOR_DIR = "expert_calibrator"
"""Where ``cascade tune`` saves the expert's calibrator in the artifact (the Serve app applies it)."""


@dataclass(frozen=True)
class ExpertCalibration:
    """One tier's fitted calibrator, the pool it was fitted on, and what judging that pool cost."""

    tier: str
    kind: str
    calibrator: CalibratorBase
    pool_size: int
    usage: CalibrationUsage
    from_cache: bool

    def apply(self, scores: TierScores) -> TierScores:
        """``scores`` with calibrated probabilities (so calibrated predictions and correctness)."""
        if len(scores.y) == 0:
            return scores
        return replace(scores, probs=self.calibrator.transform(scores.probs))

    def report(self, raw_test: TierScores) -> dict[str, Any]:
        """What was fitted, on what, at what cost, and accuracy / ECE on the test part before and after."""
        after = self.apply(raw_test)
        return {
            "kind": self.kind, "fitted_on": FITTED_ON, "pool_size": self.pool_size, "usage": self.usage.as_dict(),
            "test": {"samples": len(raw_test.y),
                     "accuracy_before": float(np.mean(raw_test.correct)), "accuracy_after": float(np.mean(after.correct)),
                     "ece_before": float(ece(raw_test.probs, raw_test.y)), "ece_after": float(ece(after.probs, after.y))},
        }


def fit_expert_calibration(config: CascadeConfig, tier: str, expert_config: ExpertConfig, pool: Dataset,
                           expert_for: Callable[[], Any], refresh: bool = False,
                           progress: bool = True) -> ExpertCalibration | None:
    """Fit ``expert_config.calibration`` on the pool judged leave-one-out by the expert ``expert_for()``
    returns (called only when the pool's scores are not cached); ``None`` for ``calibration: none``."""
    kind = expert_config.calibration
    if kind == "none":
        return None
    fingerprint = expert_fingerprint(expert_config, pool.modality)
    key = content_hash("expert-pool-left-out", fingerprint, config.cost.model_dump(), dataset_hash(pool))

    def judge_pool() -> TierScores:
        expert = expert_for()
        if progress:
            progress_console().print(f"calibrating {tier} ({expert_config.display_name}): judging its {len(pool)} "
                                     "labelled pool samples, each with its own label out of retrieval", highlight=False)
        with leaving_out_self(expert):
            return score_expert(expert, pool, tier, progress=progress)

    scores, hit = cached(key, judge_pool, refresh=refresh, fingerprint=fingerprint, ids=pool.ids)
    return ExpertCalibration(tier=tier, kind=kind, calibrator=fit_expert_calibrator(kind, scores.probs, scores.y),
                             pool_size=len(pool), usage=CalibrationUsage.of(scores), from_cache=hit)
