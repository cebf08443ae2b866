"""`cascade tune`: fit the policy on the fit part, certify a budgeted threshold on the certify part, save.

The parts come from :func:`cascade.data.roles.load_roles` (the same ones the harness and the demo
use); the test part is not touched.

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
from cascade.data.roles import load_roles
from experiments.held_out import NEEDS_EXPERT, held_out_needs_experts


def tune(config: CascadeConfig, progress: bool = True) -> dict[str, Any]:
    """Fit the policy on the fit part, certify the threshold on the certify part, save; return the certificate."""
    from policies import Hop, make_policy, make_tuner, tie_keys
    from policies.tuners import budget_grid

    from experiments.held_out import score_held_out, varying_cost
    from experiments.run import fit_small_tier
    from experiments.scoring import score_small

    roles = load_roles(config)
    small_tier, _ = fit_small_tier(config, roles)
    policy = make_policy(config.policy.kind, n_classes=small_tier.n_classes, **config.policy.params)
    seed = config.budget.tie_seed
    learns_from_expert, certifies_cost = config.policy.kind in NEEDS_EXPERT, config.budget.kind == "cost"
    needed = held_out_needs_experts([config.policy.kind], config.budget.kind)
    held_out = score_held_out(config, roles, small_tier, progress=progress) if needed else None
    if held_out is not None and learns_from_expert:
        fit, expert = held_out.fit.small, held_out.fit.experts["expert"]
        policy.fit(fit.features, fit.correct, expert.correct, cost=varying_cost(expert.cost))
        fit_keys = held_out.fit.tie_keys
    else:
        fit = score_small(small_tier, roles.fit, config.cost.small_per_call)
        policy.fit(fit.features, fit.correct, fit.correct)
        fit_keys = None if seed is None else tie_keys(roles.fit.X, seed)
    grid = budget_grid(config.budget, policy.score(fit.features), fit_keys)
    tuner = make_tuner(config.budget, config.cost, config.expert.max_model_len, grid)
    if held_out is not None and certifies_cost:
        certify, expert_cost = held_out.certify.small, held_out.certify.experts["expert"].cost
        keys = held_out.certify.tie_keys
    else:
        certify, expert_cost = score_small(small_tier, roles.certify, config.cost.small_per_call), None
        keys = None if seed is None else tie_keys(roles.certify.X, seed)
    tuner.fit(policy.score(certify.features), certify.correct, expert_cost, tie_keys=keys, tie_seed=seed,
              part="certify")
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
