"""`cascade tune`: fit the policy on the fit part, certify a budgeted threshold on the certify part, save.

The parts come from :func:`cascade.data.roles.load_roles` (the same ones the harness and the demo
use); the test part is not touched.

The artifact directory (``config.artifact_dir``) is what the Ray Serve app loads::

    small/        the fitted small tier (detector + calibrator), checksummed
    hop/          policy + threshold + certificate, checksummed
    config.yaml   the config it was tuned with
    certificate.json  the certificate again, for people to read
    monitor_reference/  the certify part's deferral scores, checksummed: the exchangeability monitor's
                      reference (:mod:`policies.watch`)
    expert_calibrator/  the expert's calibrator (``expert.calibration``; absent for ``none``), fitted on
                      the labelled pool judged leave-one-out; the Serve app's expert applies it
    policy_fit.json   what the policy learned from (fit part, cross-fitted training samples), what it
                      serves and why, the extra expert calls and tokens cross-fitting spent, and the
                      expert calibration (kind, pool, calls and tokens spent judging the pool)

A ``chain`` budget (``tiers``) certifies every tier's threshold at once and writes its own layout
(:func:`policies.tune_chain.tune_chain`).

A learned policy with ``policy.crossfit_folds`` > 0 also learns from out-of-fold outputs over the
train split (:func:`cascade.crossfit.cross_fitted`); rule policies spend no extra expert calls.

Each tuning is counted against its certify part (:mod:`policies.certify_ledger`): a different
tuning on a part already used is refused unless ``budget.certify_reuse`` is ``spend-delta``, and the
certificate records ``certify_uses`` and ``delta_spent``. Re-running the same config (into any
artifact directory, on any port) is the same tuning and counts once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cascade.config import CascadeConfig
from cascade.crossfit import CrossFit, cross_fitted
from cascade.data.roles import labelled_pool, load_roles
from cascade.expert_calibration import (EXPERT_CALIBRATOR_DIR, ExpertCalibration, fit_expert_calibration,
                                       save_expert_calibrator)
from cascade.experts.calibrated import FITTED_ON
from cascade.scoring import content_hash, dataset_hash, score_small
from cascade.small import fit_small_tier
from policies import Hop, make_policy, make_tuner, tie_keys
from policies.ties import canonical
from policies.watch import MONITOR_REFERENCE_DIR, save_reference
from policies.certify_ledger import CertifyLedger
from policies.held_out import NEEDS_EXPERT, held_out_needs_experts, learning_set, score_held_out
from policies.tuners import budget_grid


def tune(config: CascadeConfig, progress: bool = True) -> dict[str, Any]:
    """Fit the policy on the fit part, certify the threshold on the certify part, save; return the certificate."""
    if config.budget.kind == "chain":
        from policies.tune_chain import tune_chain  # it imports this module's _tuning

        return tune_chain(config, progress)
    roles = load_roles(config)
    ledger, part, tuning = CertifyLedger(), dataset_hash(roles.certify), _tuning(config)
    label = f"the certify part of {config.dataset.name} (n={len(roles.certify_index)}, seed {config.experiment.seed})"
    ledger.check(part, label, tuning, config.budget.certify_reuse)  # before any fitting: refuse early
    small_tier, _ = fit_small_tier(config, roles)
    policy = make_policy(config.policy.kind, n_classes=small_tier.n_classes, **config.policy.params)
    seed = config.budget.tie_seed
    learns_from_expert, certifies_cost = config.policy.kind in NEEDS_EXPERT, config.budget.kind == "cost"
    needed = held_out_needs_experts([config.policy.kind], config.budget.kind)
    held_out = score_held_out(config, roles, small_tier, progress=progress) if needed else None
    pool = labelled_pool(config, roles.train)
    calibration = (held_out.calibrations.get("expert") if held_out is not None
                   else expert_calibration(config, pool, progress))
    calibrations = {"expert": calibration} if calibration is not None else {}
    training = cross_fitted(config, roles, small_tier, progress, calibrations) if learns_from_expert else None
    if held_out is not None and learns_from_expert:
        fit, learn_on = held_out.fit.small, learning_set(held_out.fit, training, "expert")
        if config.policy.kind != "learned":
            del learn_on["exchangeable"]  # only the learned policy takes cross-fitted rows
        policy.fit(**learn_on)
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
    spent = ledger.record(part, label, tuning, tuner.delta, config.budget.certify_reuse, config.artifact_dir)
    certify_scores = canonical(policy.score(certify.features))
    tuner.fit(certify_scores, certify.correct, expert_cost, tie_keys=keys, tie_seed=seed, part="certify")
    hop = Hop(policy, float(tuner.threshold_), spent.apply(tuner.certificate_))
    root = Path(config.artifact_dir)
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    small_tier.save(staging / "small")
    hop.save(staging / "hop")
    save_reference(certify_scores, staging / MONITOR_REFERENCE_DIR)
    if calibration is not None:
        save_expert_calibrator(calibration, staging / EXPERT_CALIBRATOR_DIR, config.expert, roles.train.modality)
    config.to_yaml(staging / "config.yaml")
    certificate = hop.certificate.model_dump(mode="json")
    (staging / "certificate.json").write_text(json.dumps(certificate, indent=2))
    fitted = policy_fit(config, policy, len(fit.y), training, len(pool))
    fitted["expert_calibration"] = None if calibration is None else {
        "kind": calibration.kind, "fitted_on": FITTED_ON, "pool_size": calibration.pool_size,
        "judged": calibration.judged, "usage": calibration.usage.as_dict()}
    (staging / "policy_fit.json").write_text(json.dumps(fitted, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return certificate


def expert_calibration(config: CascadeConfig, pool: Any, progress: bool = True) -> ExpertCalibration | None:
    """The served expert's calibrator, fitted on the pool judged leave-one-out (the pool's scores cached, so
    after the harness no model runs); the expert's engine starts only on a cache miss and is closed after."""
    from cascade.experts import make_expert

    engines: list[Any] = []

    def expert() -> Any:
        engines.append(make_expert(config.expert, cost=config.cost, pool=pool))
        return engines[-1]

    try:
        return fit_expert_calibration(config, "expert", config.expert, pool, expert, progress=progress)
    finally:
        for engine in engines:
            engine.close()


# settings that cannot change what a tuning finds: where it is saved, how it is served, what the harness sweeps
NOT_TUNING = {"name": True, "artifact_dir": True, "serve": True,
              "budget": {"hard_cap", "window", "learning_rate", "served_rule", "cap_overrides_certificate",
                         "certify_reuse"},
              "experiment": {"results_dir", "random_seeds", "splits", "budgets", "scoring", "ray_data_concurrency",
                             "ray_data_num_cpus"}}


def _tuning(config: CascadeConfig) -> str:
    """The tuning's identity in the certify ledger: a hash of every setting that may change its outcome."""
    settings = config.model_dump(mode="json", exclude=NOT_TUNING)
    if settings.get("tiers") is None:  # a config without tiers tunes as it did before the field existed
        settings.pop("tiers", None)
    return content_hash(settings)


def policy_fit(config: CascadeConfig, policy: Any, fit_samples: int, training: CrossFit | None,
               pool_size: int) -> dict[str, Any]:
    """What the policy learned from and serves: fit-part and cross-fitted sample counts, the labelled samples
    the expert retrieves from (``pool_size``), the learned policy's choice and reason, and the expert calls,
    tokens and cost cross-fitting added (zero without it)."""
    usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    if training is not None:
        usage = training.expert_usage["expert"]
    return {
        "policy": config.policy.kind,
        "fit_samples": fit_samples,
        "expert_pool_size": pool_size,
        "crossfit": None if training is None else {"folds": training.folds, "samples": len(training.small.y)},
        "learned_from": int(getattr(policy, "n_fit_", fit_samples)),
        "choice": getattr(policy, "choice_", None),
        "reason": getattr(policy, "choice_reason_", None),
        "extra_expert_usage": usage,
    }
