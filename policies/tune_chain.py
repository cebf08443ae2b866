"""`cascade tune` for a ``chain`` budget: certify one rule for every tier and abstention at once, save.

Every tier is scored once on the fit and certify parts (:func:`policies.chain_scores.score_held_out_chain`,
cached; the test part is not touched), the budget's rule grid is placed on the fit part
(:func:`policies.tuners.factory.chain_grid`) and :class:`~policies.tuners.chain.ChainTuner` certifies a rule
on the certify part. The tuning is counted against its certify part as :func:`policies.tune.tune` counts
it (same ledger, same identity), and the certificate's statement says what the part has spent.

The artifact directory (``config.artifact_dir``) the Ray Serve app loads::

    small/                      the fitted small tier (detector + calibrator), checksummed
    chain/                      tiers, rule and certificate (:meth:`policies.chain_rule.ChainRule.load`)
    expert_calibrators/<tier>/  each tier's calibrator (absent for ``calibration: none``), fitted on the
                                labelled pool judged leave-one-out
                                (:func:`cascade.expert_calibration.load_expert_calibrator`)
    config.yaml                 the config it was tuned with
    certificate.json            the certificate with ``certify_uses`` and ``delta_spent``, for people to read
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cascade.config import CascadeConfig, ChainBudget, ConfigError, served_tiers
from cascade.config.tiers import max_request_cost
from cascade.data.roles import load_roles
from cascade.expert_calibration import save_expert_calibrator
from cascade.scoring import dataset_hash
from policies.certify_ledger import CertifyLedger
from policies.chain_rule import CHAIN_DIR, EXPERT_CALIBRATORS_DIR, ChainRule
from policies.chain_scores import score_held_out_chain
from policies.ties import canonical
from policies.tune import _tuning
from policies.tuners.factory import chain_grid, make_tuner



def tune_chain(config: CascadeConfig, progress: bool = True) -> dict[str, Any]:
    """Certify the chain budget's rule on the certify part over a grid fixed on the fit part, save the artifact;
    return the certificate. An unreachable budget raises :class:`~policies.certificate.InfeasibleTarget`."""
    budget = config.budget
    if not isinstance(budget, ChainBudget):
        raise ConfigError(f"budget.kind: tune_chain certifies a 'chain' budget, this config's is '{budget.kind}'")
    roles = load_roles(config)
    ledger, part, tuning = CertifyLedger(), dataset_hash(roles.certify), _tuning(config)
    label = f"the certify part of {config.dataset.name} (n={len(roles.certify_index)}, seed {config.experiment.seed})"
    ledger.check(part, label, tuning, budget.certify_reuse)  # before any scoring: refuse early
    scored = score_held_out_chain(config, roles, progress=progress)
    fit, certify = scored.fit, scored.certify
    grid = chain_grid(budget, fit.scores, fit.correct, fit.costs)
    tuner = make_tuner(budget, grid=grid, max_request_cost=max_request_cost(config))
    spent = ledger.record(part, label, tuning, tuner.delta, budget.certify_reuse, config.artifact_dir)
    tuner.fit(certify.scores, certify.correct, certify.costs, part="certify")
    certified = spent.apply(tuner.certificate_)
    small_defers = float(np.mean(canonical(certify.scores[:, 0]) > canonical(tuner.rule_[0]))) if len(certify) else 0.0
    certified = certified.model_copy(update={"achieved": {**certified.achieved, "defer_rate": small_defers}})
    chain = ChainRule(tuple(certify.names[1:]), tuner.rule_, certified)
    certificate = chain.certificate.model_dump(mode="json")
    root = Path(config.artifact_dir)
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    scored.small_tier.save(staging / "small")
    chain.save(staging / CHAIN_DIR)
    experts = {tier.name: tier.expert for tier in served_tiers(config)}
    for name, calibration in scored.calibrations.items():
        save_expert_calibrator(calibration, staging / EXPERT_CALIBRATORS_DIR / name, experts[name],
                               roles.train.modality)
    config.to_yaml(staging / "config.yaml")
    (staging / "certificate.json").write_text(json.dumps(certificate, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return certificate
