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
from pathlib import Path
from typing import Any

import numpy as np

from cascade.artifact import ArtifactError, verify_manifest, write_manifest
from cascade.calibration import CALIBRATORS, CalibratorBase, ece, load_calibrator
from cascade.config import CascadeConfig, ExpertConfig
from cascade.data import Dataset
from cascade.experts.calibrated import FITTED_ON, CalibrationUsage, fit_expert_calibrator, leaving_out_self
from cascade.experts.fingerprint import expert_fingerprint
from cascade.scoring import TierScores, cached, content_hash, dataset_hash, progress_console, score_expert

EXPERT_CALIBRATOR_DIR = "expert_calibrator"
"""Where ``cascade tune`` saves the expert's calibrator in the artifact (the Serve app applies it)."""
_MANIFEST_KIND = "cascade.expert-calibrator.manifest"


@dataclass(frozen=True)
class ExpertCalibration:
    """One tier's fitted calibrator, the pool it was fitted on, and what judging that pool cost."""

    tier: str
    kind: str
    calibrator: CalibratorBase
    pool_size: int
    judged: int
    """pool samples judged (leave-one-out) to fit the calibrator (``expert.calibration_samples``)"""
    usage: CalibrationUsage
    from_cache: bool
    pool_probs: np.ndarray
    """the expert's raw probabilities on the judged pool samples (what the calibrator was fitted on)"""
    pool_y: np.ndarray

    def apply(self, scores: TierScores) -> TierScores:
        """``scores`` with calibrated probabilities (so calibrated predictions and correctness)."""
        if len(scores.y) == 0:
            return scores
        return replace(scores, probs=self.calibrator.transform(scores.probs))

    def report(self, raw_test: TierScores, deferred: np.ndarray | None = None) -> dict[str, Any]:
        """What was fitted, on what, at what cost; accuracy / ECE on the test part before and after; and every
        calibrator kind fitted on the same pool scores, on all test samples and on the ``deferred`` ones
        (a boolean mask: those the small tier hands over, where the expert's answers count)."""
        after = self.apply(raw_test)
        compared = {}
        for kind in CALIBRATORS:
            probs = fit_expert_calibrator(kind, self.pool_probs, self.pool_y).transform(raw_test.probs)
            correct = probs.argmax(axis=1) == raw_test.y
            compared[kind] = {"accuracy": float(np.mean(correct)), "ece": float(ece(probs, raw_test.y)),
                              "accuracy_deferred": None if deferred is None or not deferred.any()
                              else float(np.mean(correct[deferred]))}
        return {
            "kind": self.kind, "fitted_on": FITTED_ON, "pool_size": self.pool_size, "judged": self.judged,
            "usage": self.usage.as_dict(),
            "test": {"samples": len(raw_test.y),
                     "accuracy_before": float(np.mean(raw_test.correct)), "accuracy_after": float(np.mean(after.correct)),
                     "ece_before": float(ece(raw_test.probs, raw_test.y)), "ece_after": float(ece(after.probs, after.y))},
            "deferred_samples": None if deferred is None else int(np.sum(deferred)),
            "compared": compared,
        }


def fit_expert_calibration(config: CascadeConfig, tier: str, expert_config: ExpertConfig, pool: Dataset,
                           expert_for: Callable[[], Any], refresh: bool = False,
                           progress: bool = True) -> ExpertCalibration | None:
    """Fit ``expert_config.calibration`` on the pool judged leave-one-out by the expert ``expert_for()``
    returns (called only when the pool's scores are not cached); ``None`` for ``calibration: none``."""
    kind = expert_config.calibration
    if kind == "none":
        return None
    judged = calibration_draw(pool, expert_config.calibration_samples, config.experiment.seed)
    fingerprint = expert_fingerprint(expert_config, pool.modality)
    key = content_hash("expert-pool-left-out", fingerprint, config.cost.model_dump(), dataset_hash(pool),
                       dataset_hash(judged))

    def judge_pool() -> TierScores:
        expert = expert_for()
        if progress:
            progress_console().print(f"calibrating {tier} ({expert_config.display_name}): judging {len(judged)} of its "
                                     f"{len(pool)} labelled pool samples, each with its own label out of retrieval",
                                     highlight=False)
        with leaving_out_self(expert):
            return score_expert(expert, judged, tier, progress=progress)

    scores, hit = cached(key, judge_pool, refresh=refresh, fingerprint=fingerprint, ids=judged.ids)
    return ExpertCalibration(tier=tier, kind=kind, calibrator=fit_expert_calibrator(kind, scores.probs, scores.y),
                             pool_size=len(pool), judged=len(judged), usage=CalibrationUsage.of(scores), from_cache=hit,
                             pool_probs=scores.probs, pool_y=scores.y)


def calibration_draw(pool: Dataset, samples: int | None, seed: int) -> Dataset:
    """The pool samples the expert judges for its calibrator: all, or a seeded uniform draw of ``samples``."""
    if samples is None or samples >= len(pool):
        return pool
    return pool.subset(np.sort(np.random.default_rng(seed).permutation(len(pool))[:samples]))


def expert_identity(expert_config: ExpertConfig, modality: str) -> str:
    """What a calibrator is a calibrator of: the expert's fingerprint without library versions (the
    config fields that change answers, the prompt, the model files)."""
    fingerprint = expert_fingerprint(expert_config, modality)
    return content_hash({name: part for name, part in fingerprint.items() if name != "libraries"})


def save_expert_calibrator(calibration: ExpertCalibration, directory: str | Path, expert_config: ExpertConfig,
                           modality: str) -> None:
    """Save the calibrator with the identity of the expert it was fitted for, sealed by a manifest."""
    directory = Path(directory)
    calibration.calibrator.save(directory / "calibrator")
    write_manifest(directory, _MANIFEST_KIND, {"kind": calibration.kind, "expert": expert_config.display_name,
                                               "expert_identity": expert_identity(expert_config, modality)})


def load_expert_calibrator(directory: str | Path, expert_config: ExpertConfig, modality: str) -> CalibratorBase:
    """The saved calibrator, checked against ``expert_config``: a damaged one, one of another kind, or one
    fitted for another expert (model, prompt, shots, labels) raises :class:`ArtifactError` naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: missing; expert.calibration is '{expert_config.calibration}' and this "
                            "artifact holds no expert calibrator (tuned before expert calibration): re-run `cascade tune`")
    meta = verify_manifest(directory, _MANIFEST_KIND)
    if meta.get("kind") != expert_config.calibration:
        raise ArtifactError(f"{directory}: a '{meta.get('kind')}' calibrator, the config asks for "
                            f"'{expert_config.calibration}'; re-run `cascade tune`")
    if meta.get("expert_identity") != expert_identity(expert_config, modality):
        raise ArtifactError(f"{directory}: fitted for the expert {meta.get('expert')!r}, not for this config's "
                            f"{expert_config.display_name!r} (model, prompt, shots or labels differ); re-run `cascade tune`")
    return load_calibrator(directory / "calibrator")
