"""Budget adherence: do the tuned thresholds keep their promises on data they were not fitted on?

The calibrator and the policy were fitted on the fit part, so the certify and test parts are
exchangeable given them. They are pooled; each of ``experiment.splits`` random splits certifies
a tuner on a certify-sized share and measures the realised deferral rate, cost and accepted
error on the rest (vectorised over splits by :func:`policies.budget_adherence`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cascade.config import CascadeConfig
from policies import RateTuner, budget_adherence as adherence_over_splits, make_tuner
from policies.held_out import HeldOut, policy_scores
from policies.tuners import budget_grid

DELTA = 0.05


def budget_adherence(config: CascadeConfig, held_out: HeldOut) -> list[dict[str, Any]]:
    """One row per tuner and target: mean realised value with a 95% interval and violation rate."""
    kind = config.policy.kind if config.policy.kind not in ("oracle",) else "confidence"
    certify, test = held_out.certify, held_out.test
    scores = np.concatenate([
        policy_scores(kind, held_out.fit, certify, "expert"),
        policy_scores(kind, held_out.fit, test, "expert"),
    ])
    small_correct = np.concatenate([certify.small.correct, test.small.correct])
    expert_cost = (np.concatenate([certify.experts["expert"].cost, test.experts["expert"].cost])
                   if "expert" in certify.experts else None)  # only a cost budget reads it (and then it is scored)
    keys = None if certify.tie_keys is None or test.tie_keys is None else np.concatenate([certify.tie_keys,
                                                                                          test.tie_keys])
    tuners: list[Any] = []
    for target in config.experiment.budgets:
        tuners += [RateTuner(target=target), RateTuner(target=target, delta=DELTA)]
    if config.budget.kind != "rate":
        grid = budget_grid(config.budget, policy_scores(kind, held_out.fit, held_out.fit, "expert"),
                           held_out.fit.tie_keys)
        tuners.append(make_tuner(config.budget, config.cost, config.expert.max_model_len, grid))
    rows = []
    for tuner in tuners:
        result = adherence_over_splits(tuner, scores, small_correct, expert_cost, tie_keys=keys,
                                       calibration_size=len(certify),
                                       n_splits=config.experiment.splits, seed=config.experiment.seed)
        summary = result.summary()
        metric, target = next(iter(result.targets.items()))
        realised = result.realised[metric][~result.refused]
        stats = summary["metrics"][metric]
        rows.append({
            "tuner": type(tuner).__name__ + (f"(δ={tuner.delta:g})" if getattr(tuner, "delta", None) else ""),
            "metric": metric, "target": target, "guarantee": summary["guarantee"],
            "mean": stats["mean"], "ci_low": stats["ci95"][0], "ci_high": stats["ci95"][1],
            "violation_rate": summary["violation_rate"], "refusal_rate": summary["refusal_rate"],
            "splits": summary["splits"], "realised": realised.tolist(),
        })
    return rows
