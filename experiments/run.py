"""`cascade experiment run CONFIG`: score each tier once, sweep every policy, report.

Steps, each cached or pure numpy after the first run:

1. load the seeded train / fit / certify / test parts (:func:`cascade.data.roles.load_roles`);
2. fit the small tier (detector on train, calibrator on fit) and score the held-out parts;
3. score the expert and the no-LLM control expert on the test part, and on the held-out parts when a
   swept policy or the budget reads them there (cached by content hash); calibrate each expert on the
   labelled pool judged leave-one-out (:mod:`cascade.expert_calibration`);
4. fit each deferral policy in ``experiment.policies`` on the fit part, sweep it on the test part;
5. summarise (AIQ, APGR, CPT, gap to oracle), check budget adherence over random certify/test splits;
6. write PNG plots, ``report.md`` and ``results.json`` into ``results/<name>/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from cascade.artifact import json_default
from cascade.config import CascadeConfig
from cascade.crossfit import CrossFit, cross_fitted
from cascade.data.roles import DataRoles, labelled_pool, load_roles
from cascade.scoring import TierScores
from cascade.small import fit_small_tier
from experiments import plots
from experiments.curves import thin_curves
from experiments.adherence import budget_adherence
from experiments.frontier import aiq, apgr, cpt, upper_hull
from experiments.sweep import Curve, auroc_curve, sweep
from policies.held_out import (Scored, evaluation_index, harness_needs_experts, learning_set, policy_scores,
                               score_held_out)

RATE_GRID = np.linspace(0.0, 1.0, 101)


def run_experiment(config: CascadeConfig, results_root: str | Path | None = None, refresh: bool = False,
                   progress: bool = True) -> Path:
    """Run the whole experiment; return the results folder."""
    started = time.perf_counter()
    out = Path(results_root or config.experiment.results_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    roles = load_roles(config)
    small_tier, small_fit_s = fit_small_tier(config, roles)
    held_out = score_held_out(config, roles, small_tier, refresh=refresh, progress=progress,
                              held_out_experts=harness_needs_experts(config))
    test = held_out.test
    training = cross_fitted(config, roles, small_tier, progress, held_out.calibrations)
    curves, scalars = frontier_tables(config, held_out.fit, test, training)
    adherence = budget_adherence(config, held_out)
    tiers = tier_summary(config, test, small_tier, roles)
    parts = {"train": roles.train, "fit": roles.fit, "certify": roles.certify, "test": roles.test}
    results = {
        "name": config.name,
        "config": config.model_dump(mode="json"),
        "data": {name: {"samples": len(part), "positive_rate": part.positive_rate} for name, part in parts.items()},
        "evaluated": held_out.sizes(),
        "expert_pool_size": len(labelled_pool(config, roles.train)),  # labelled samples the experts retrieve from
        "expert_calibration": held_out.expert_calibration,  # per expert: calibrator, its pool cost, test before/after
        "tiers": tiers,
        "scalars": scalars,
        "budget_adherence": adherence,
        "curves": thin_curves(curves),
        "timing_s": {"small_fit": small_fit_s, "total": time.perf_counter() - started},
        "crossfit": None if training is None else {"folds": training.folds, "samples": len(training.small.y),
                                                   "expert_usage": training.expert_usage},
        "expert_parts": held_out.expert_parts(),
        "expert_scores_from_cache": {tier: held_out.fit.from_cache.get(tier, True) and test.from_cache[tier]
                                     for tier in test.experts},
    }
    write_outputs(out, results, test)
    return out


def learned_policy(fit: Scored, training: CrossFit | None, expert: str) -> Any:
    """The learned policy fitted on :func:`policies.held_out.learning_set`."""
    from policies import LearnedPolicy

    return LearnedPolicy(n_classes=fit.small.probs.shape[1]).fit(**learning_set(fit, training, expert))


def learned_choice(policy: Any) -> dict[str, Any]:
    """What a fitted learned policy serves (rule / learned / blend) and why."""
    return {"choice": policy.choice_, "reason": policy.choice_reason_, "samples": policy.n_fit_,
            "cross_validation": policy.cv_}


def frontier_tables(config: CascadeConfig, fit: Scored, test: Scored,
                    training: CrossFit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Curves and scalars for every expert x policy (plus random mean, oracle and the upper hull).

    With ``budget.tie_seed`` set, every curve splits tied scores with the test samples' tie keys,
    as the served rule does (:func:`experiments.sweep.sweep`).
    """
    curves: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    small = test.small
    budgets = np.array(config.experiment.budgets)
    binary = small.probs.shape[1] == 2 and len(np.unique(small.y)) == 2
    for expert_name, expert in test.experts.items():
        def run(scores: np.ndarray) -> Curve:
            return sweep(scores, small.pred, expert.pred, small.y, expert_cost=expert.cost, small_cost=small.cost,
                         tie_keys=test.tie_keys)

        scores, skipped, learned = {}, {}, None
        for kind in (*config.experiment.policies, "oracle"):
            try:
                if kind == "learned":
                    learned = learned_policy(fit, training, expert_name)
                    scores[kind] = learned.score(small.features)
                else:
                    scores[kind] = policy_scores(kind, fit, test, expert_name)
            except ValueError as exc:  # a learned policy with nothing to learn on a tiny fit part
                skipped[kind] = str(exc)
        by_policy = {kind: run(values) for kind, values in scores.items()}
        by_policy["random"] = _mean_curve([run(policy_scores("random", fit, test, expert_name, seed=s))
                                           for s in range(config.experiment.random_seeds)])
        oracle = by_policy["oracle"]
        curves[expert_name] = {kind: curve.as_dict() for kind, curve in by_policy.items()}
        policies_only = [c for k, c in by_policy.items() if k != "oracle"]
        for x in ("defer_rate", "cost_per_1k"):
            hull_x, hull_y = upper_hull(np.concatenate([getattr(c, x) for c in policies_only]),
                                        np.concatenate([c.accuracy for c in policies_only]))
            curves[expert_name][f"upper hull ({x})"] = {x: hull_x.tolist(), "accuracy": hull_y.tolist()}
        small_acc, expert_acc = float(np.mean(small.correct)), float(np.mean(expert.correct))
        per_policy = {}
        for kind, curve in by_policy.items():
            row = _curve_scalars(curve, oracle, small_acc, expert_acc, budgets)
            if binary and kind in scores:
                auroc = auroc_curve(scores[kind], small.positive_prob, expert.positive_prob, small.y, budgets,
                                    tie_keys=test.tie_keys)
                for budget, value in zip(budgets, auroc):
                    row["at_budget"][f"{budget:g}"]["auroc"] = float(value)
            per_policy[kind] = row
        scalars[expert_name] = {"small_accuracy": small_acc, "expert_accuracy": expert_acc,
                                "oracle_best_accuracy": float(oracle.accuracy.max()), "policies": per_policy,
                                "skipped_policies": skipped}
        if learned is not None:
            scalars[expert_name]["learned_choice"] = learned_choice(learned)
    return curves, scalars


def _curve_scalars(curve: Curve, oracle: Curve, small_acc: float, expert_acc: float,
                   budgets: np.ndarray) -> dict[str, Any]:
    at_budget = {}
    for budget in budgets:
        point, best = curve.at_rate(budget), oracle.at_rate(budget)
        at_budget[f"{budget:g}"] = {"accuracy": point["accuracy"], "f1": point["f1"], "cost_per_1k": point["cost_per_1k"],
                                    "gap_to_oracle": best["accuracy"] - point["accuracy"]}
    return {
        "aiq_accuracy_vs_cost": aiq(curve.cost_per_1k, curve.accuracy),
        "aiq_accuracy_vs_rate": aiq(curve.defer_rate, curve.accuracy),
        "apgr": apgr(curve.defer_rate, curve.accuracy, small_acc, expert_acc),
        **{f"cpt{p}": cpt(curve.defer_rate, curve.accuracy, small_acc, expert_acc, p) for p in (50, 80, 95)},
        "at_budget": at_budget,
    }


def _mean_curve(curves: list[Curve]) -> Curve:
    """Average curves on a common deferral-rate grid (for the random baseline's seeds)."""
    def on_grid(curve: Curve, name: str) -> np.ndarray:
        return np.interp(RATE_GRID, curve.defer_rate, getattr(curve, name))

    mean = {name: np.mean([on_grid(c, name) for c in curves], axis=0) for name in ("accuracy", "f1", "cost_per_1k")}
    undefined = np.full(len(RATE_GRID), np.nan)
    return Curve(threshold=undefined, tie_break=undefined, defer_rate=RATE_GRID, **mean)


def tier_summary(config: CascadeConfig, test: Scored, small_tier: Any, roles: DataRoles) -> dict[str, Any]:
    """Accuracy, F1, AUROC, cost and calibration of each tier alone on the test evaluation subset."""
    from cascade.calibration import brier, ece

    def summary(scores: TierScores) -> dict[str, Any]:
        row: dict[str, Any] = {
            "accuracy": float(np.mean(scores.correct)),
            "f1": float(f1_score(scores.y, scores.pred, average="binary" if scores.probs.shape[1] == 2 else "macro")),
            "cost_per_1k": float(1000 * np.mean(scores.cost)),
            "mean_latency_ms": float(1000 * np.mean(scores.latency_s)),
            "ece": float(ece(scores.probs, scores.y)),
            "brier": float(brier(scores.probs, scores.y)),
            "mean_prompt_tokens": float(np.mean(scores.prompt_tokens)),
        }
        if scores.probs.shape[1] == 2 and len(np.unique(scores.y)) == 2:
            row["auroc"] = float(roc_auc_score(scores.y, scores.probs[:, 1]))
        return row

    rows = {"small": summary(test.small), **{name: summary(s) for name, s in test.experts.items()}}
    index = evaluation_index(roles.test, config.experiment.max_scored_per_split, config.experiment.seed)
    raw = small_tier.predict_raw(roles.test.subset(index).X)
    rows["small"]["ece_uncalibrated"] = float(ece(raw, test.small.y))
    return rows


def write_outputs(out: Path, results: dict[str, Any], test: Scored) -> None:
    from cascade.calibration import plot_reliability
    from experiments.report import markdown_report

    plots.frontiers(results, out)
    plot_reliability(test.small.probs, test.small.y, out / "reliability.png")
    if results["budget_adherence"]:
        plots.budget_adherence(results["budget_adherence"], out / "budget_adherence.png")
    from experiments.benchmarks.results_io import recorded, recorded_line

    stamped = {**results, "recorded": recorded()}
    (out / "results.json").write_text(json.dumps(stamped, indent=1, default=json_default))
    (out / "report.md").write_text(markdown_report(results).rstrip("\n") + "\n\n" + recorded_line(stamped["recorded"]) + "\n")

