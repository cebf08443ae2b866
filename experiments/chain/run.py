"""``python -m experiments.chain CONFIG``: N tiers and abstention, from scores to a certified rule.

Steps, each cached or pure numpy after the first run:

1. load the seeded train / fit / certify / test parts (:func:`cascade.data.roles.load_roles`);
2. score the small tier and every tier once on the held-out and test parts (:mod:`policies.chain_scores`);
3. place the chain budget's rule grid on the fit part (:func:`policies.tuners.factory.chain_grid`);
4. on the test part: every grid rule's metrics, the Pareto set, the frontier at several abstention bounds,
   the oracle and random routing with the same answer shares;
5. certify the budget with :class:`policies.tuners.chain.ChainTuner` on the certify part, report the rule's
   metrics on the test part;
6. each tier against the cut without it (:mod:`experiments.chain.hops`);
7. write ``results.json``, ``report.md`` and the plot into ``<results>/<name>/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cascade.artifact import json_default
from cascade.config import CascadeConfig, ChainBudget, ConfigError, served_tiers
from cascade.config.tiers import SMALL_TIER, max_request_cost
from cascade.data.roles import load_roles
from cascade.scoring import TierScores
from experiments.chain.frontier import (oracle, pareto_mask, random_routing, rule_metrics, rule_rows, shares_of,
                                        staircase)
from experiments.chain.hops import hop_verdicts
from policies import InfeasibleTarget
from policies.chain_scores import ChainPart, ChainScores, score_chain
from policies.tuners.factory import chain_grid, make_tuner


def run_chain(config: CascadeConfig, results_root: str | Path | None = None, refresh: bool = False,
              progress: bool = True) -> Path:
    """Run the chain experiment of a config with a ``chain`` budget; return the results folder."""
    budget = config.budget
    if not isinstance(budget, ChainBudget):
        raise ConfigError(f"budget.kind: the chain experiment certifies a 'chain' budget, this config's is "
                          f"'{budget.kind}' (run `cascade experiment run` for it)")
    started = time.perf_counter()
    out = Path(results_root or config.experiment.results_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    roles = load_roles(config)
    scored = score_chain(config, roles, refresh=refresh, progress=progress)
    fit, certify, test, names = scored.fit, scored.certify, scored.test, scored.test.names
    grid = chain_grid(budget, fit.scores, fit.correct, fit.costs)
    metrics = rule_metrics(test.scores, test.correct, test.costs, grid.thresholds, names)
    seeds = config.experiment.random_seeds
    pareto = rule_rows(metrics, grid.thresholds, pareto_mask(metrics))
    for row in pareto:
        row["random"] = random_routing(test.correct, test.costs, shares_of(row, names), seeds)
    gamma = budget.max_abstention or 0.0
    levels = sorted({0.0, gamma / 2, gamma, budget.grid_abstention_span})
    hops = hop_verdicts(budget, fit, test, seed=config.experiment.seed)
    results = {
        "name": config.name,
        "config": config.model_dump(mode="json"),
        "tiers": names,
        "data": {name: len(part) for name, part in (("train", roles.train), ("fit", roles.fit),
                                                      ("certify", roles.certify), ("test", roles.test))},
        "evaluated": {"fit": len(fit), "certify": len(certify), "test": len(test)},
        "expert_pool_size": scored.pool_size,
        "tier_details": tier_details(config, test),
        "expert_calibration": scored.calibration,
        "from_cache": scored.from_cache,
        "budget": {"alpha": budget.target, "max_abstention": budget.max_abstention,
                   "max_cost_per_1k": budget.max_cost_per_1k, "delta": budget.delta, "error": budget.error,
                   "method": budget.method, "max_request_cost": max_request_cost(config)},
        "grid": {"rules": len(grid.thresholds), "n_per_tier": budget.n_per_tier,
                 "abstention_span": budget.grid_abstention_span},
        "frontiers": {f"{level:g}": staircase(metrics, level) for level in levels},
        "pareto": pareto,
        "oracle": oracle(test.correct, test.costs, names),
        "certified": certified(config, scored, grid, seeds),
        "hops": hops,
    }
    results["abstention_rate"] = results["certified"].get("test", {}).get("abstention_rate")
    results["verdict"] = verdict(hops)
    results["timing_s"] = {"small_fit": scored.small_fit_s, "total": time.perf_counter() - started}
    write_outputs(out, results)
    return out


def certified(config: CascadeConfig, scored: ChainScores, grid: Any, seeds: int) -> dict[str, Any]:
    """The rule the chain budget certifies on the certify part, and what it does on the test part."""
    budget, names = config.budget, scored.test.names
    tuner = make_tuner(budget, grid=grid, max_request_cost=max_request_cost(config))
    try:
        tuner.fit(scored.certify.scores, scored.certify.correct, scored.certify.costs)
    except InfeasibleTarget as exc:
        return {"refused": str(exc), "best": exc.best}
    test = scored.test
    row = rule_rows(rule_metrics(test.scores, test.correct, test.costs, tuner.rule_[None], names),
                    tuner.rule_[None], np.ones(1, dtype=bool))[0]
    rule = row.pop("rule")
    row["wrong_answer_rate"] = row["answered_error"] * (1 - row["abstention_rate"])
    certificate = tuner.certificate_.model_dump(mode="json")
    return {"rule": rule, "certificate": certificate, "test": row,
            "test_within_target": {metric: bool(row[metric] <= target + 1e-12)
                                   for metric, target in certificate["target"].items()},
            "random": random_routing(test.correct, test.costs, shares_of(row, names), seeds)}


def tier_details(config: CascadeConfig, test: ChainPart) -> dict[str, dict[str, Any]]:
    """Each tier alone on the test part: what judges, its price, accuracy, AUROC, ECE, cost per 1k alone and
    when it answers everything at the end of the chain before it."""
    from cascade.calibration import ece

    judges = {SMALL_TIER: (config.detector.kind, f"{config.cost.small_per_call:g}")}
    for tier in served_tiers(config):
        price = f"{tier.cost_per_call or 0:g}" + (f" + {tier.cost_per_1k_prompt_tokens:g} / 1k prompt tokens"
                                                  if tier.cost_per_1k_prompt_tokens else "")
        judges[tier.name] = (tier.expert.display_name, price)
    details, through = {}, 0.0
    for name, scores in test.tiers.items():
        alone = float(1000 * np.mean(scores.cost))
        through += alone
        details[name] = {"judge": judges[name][0], "price": judges[name][1], "accuracy": float(np.mean(scores.correct)),
                         "auroc": _auroc(scores), "ece": float(ece(scores.probs, scores.y)), "cost_per_1k": alone,
                         "chain_cost_per_1k": through, "mean_latency_ms": float(1000 * np.mean(scores.latency_s)),
                         "mean_prompt_tokens": float(np.mean(scores.prompt_tokens))}
    return details


def _auroc(scores: TierScores) -> float | None:
    if scores.probs.shape[1] != 2 or len(np.unique(scores.y)) != 2:
        return None
    return float(roc_auc_score(scores.y, scores.probs[:, 1]))


def verdict(hops: list[dict[str, Any]]) -> str:
    """One sentence: does every tier earn its place, or which do not."""
    failing = [hop["tier"] for hop in hops if not hop["earns_its_place"]]
    earning = [hop["tier"] for hop in hops if hop["earns_its_place"]]
    if not failing:
        return f"Every tier earns its place: the {len(hops)}-tier chain beats each cut of it at some cost."
    def verb(names: list[str]) -> str:
        return f"{' and '.join(names)} {'does' if len(names) == 1 else 'do'}"

    return (f"Not every tier earns its place here: {verb(failing)} not (the chain without it is not beaten beyond "
            f"sampling noise at the cost chosen on the fit part, nor served cheaper)"
            + (f"; {verb(earning)}." if earning else "."))


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    from experiments.benchmarks.results_io import recorded, recorded_line
    from experiments.chain.report import PLOT, markdown_report, plot

    plot(results, out / PLOT)
    stamped = {**results, "recorded": recorded()}
    (out / "results.json").write_text(json.dumps(stamped, indent=1, default=json_default))
    (out / "report.md").write_text(markdown_report(results).rstrip("\n") + "\n\n" + recorded_line(stamped["recorded"])
                                   + "\n")
