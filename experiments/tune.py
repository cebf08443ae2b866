"""`cascade tune`: fit the policy and a budgeted threshold on the calibration split, write the artifact.

The artifact directory (``config.artifact_dir``) is what the Ray Serve app loads::

    small/        the fitted small tier (detector + calibrator), checksummed
    hop/          policy + threshold + certificate, checksummed
    config.yaml   the config it was tuned with
    certificate.json  the certificate again, for people to read
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cascade.config import CascadeConfig

NEEDS_EXPERT = ("posthoc", "learned")


def tune(config: CascadeConfig, progress: bool = True) -> dict[str, Any]:
    """Fit and save; return the certificate as a dict."""
    from policies import Hop, make_policy, make_tuner

    from experiments.run import fit_small_tier, load_experiment_splits, score_all, varying_cost
    from experiments.scoring import score_small

    splits = load_experiment_splits(config)
    small_tier, _ = fit_small_tier(config, splits)
    policy = make_policy(config.policy.kind, n_classes=small_tier.n_classes, **config.policy.params)
    tuner = make_tuner(config.budget, config.cost)
    if config.policy.kind in NEEDS_EXPERT or config.budget.kind == "cost":
        calibration, _ = score_all(config, splits, small_tier, progress=progress)
        small, expert = calibration.small, calibration.experts["expert"]
        policy.fit(small.features, small.correct, expert.correct, cost=varying_cost(expert.cost))
        expert_cost = expert.cost
    else:
        small = score_small(small_tier, splits["calibration"], config.cost.small_per_call)
        policy.fit(small.features, small.correct, small.correct)
        expert_cost = None
    tuner.fit(policy.score(small.features), small.correct, expert_cost)
    hop = Hop(policy, float(tuner.threshold_), tuner.certificate_)
    root = Path(config.artifact_dir)
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    small_tier.save(staging / "small")
    hop.save(staging / "hop")
    config.to_yaml(staging / "config.yaml")
    certificate = tuner.certificate_.model_dump(mode="json")
    (staging / "certificate.json").write_text(json.dumps(certificate, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return certificate
