"""`cascade experiment run CONFIG`: score each tier once, sweep every policy, report.

Steps, each cached or pure numpy after the first run:

1. load the seeded train / calibration / test splits;
2. fit the small tier (detector on train, calibrator on calibration) and score both held-out splits;
3. score the expert and the no-LLM control expert on the same samples (cached by content hash);
4. fit each deferral policy on the calibration split, sweep it on the test split;
5. summarise (AIQ, APGR, CPT, gap to oracle), check budget adherence over random splits;
6. write PNG plots, ``report.md`` and ``results.json`` into ``results/<name>/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from cascade.config import CascadeConfig, ExpertConfig
from cascade.data import Dataset, load_splits
from cascade.data.dataset import stratified_subsample
from cascade.experts.fingerprint import expert_fingerprint
from experiments import plots
from experiments.adherence import budget_adherence
from experiments.frontier import aiq, apgr, cpt, upper_hull
from experiments.scoring import TierScores, cached, content_hash, dataset_hash, score_expert, score_small
from experiments.sweep import Curve, auroc_curve, sweep

POLICIES = ("confidence", "margin", "entropy", "posthoc")
RATE_GRID = np.linspace(0.0, 1.0, 101)


@dataclass
class Scored:
    """Everything the sweeps need, for one held-out split."""

    small: TierScores
    experts: dict[str, TierScores]
    from_cache: dict[str, bool] = field(default_factory=dict)
    """per expert: whether its scores came from the on-disk cache (no model ran)"""


def run_experiment(config: CascadeConfig, results_root: str | Path | None = None, refresh: bool = False,
                   progress: bool = True) -> Path:
    """Run the whole experiment; return the results folder."""
    started = time.perf_counter()
    out = Path(results_root or config.experiment.results_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    splits = load_experiment_splits(config)
    small_tier, small_fit_s = fit_small_tier(config, splits)
    calibration, test = score_all(config, splits, small_tier, refresh=refresh, progress=progress)
    curves, scalars = frontier_tables(config, calibration, test)
    adherence = budget_adherence(config, calibration, test)
    tiers = tier_summary(config, test, small_tier, splits)
    results = {
        "name": config.name,
        "config": config.model_dump(mode="json"),
        "data": {name: {"samples": len(split), "positive_rate": split.positive_rate} for name, split in splits.items()},
        "evaluated": {"calibration": len(calibration.small.y), "test": len(test.small.y)},
        "tiers": tiers,
        "scalars": scalars,
        "budget_adherence": adherence,
        "curves": curves,
        "timing_s": {"small_fit": small_fit_s, "total": time.perf_counter() - started},
        "expert_scores_from_cache": {tier: calibration.from_cache[tier] and test.from_cache[tier]
                                     for tier in test.experts},
    }
    write_outputs(out, results, test, small_tier, splits)
    return out


def load_experiment_splits(config: CascadeConfig) -> dict[str, Dataset]:
    dataset = config.dataset
    options: dict[str, Any] = {}
    if dataset.name in ("csv", "jsonl"):
        options = dict(path=dataset.path, text_column=dataset.text_column, feature_columns=dataset.feature_columns,
                       label_column=dataset.label_column, positive_label=dataset.positive_label)
    if dataset.normal_classes is not None:
        options["normal_classes"] = tuple(dataset.normal_classes)
    return load_splits(dataset.name, seed=config.experiment.seed, train_fraction=dataset.train_fraction,
                       calibration_fraction=dataset.calibration_fraction, max_samples=dataset.max_samples, **options)


def fit_small_tier(config: CascadeConfig, splits: dict[str, Dataset]) -> tuple[Any, float]:
    """Fit (or load from the cache) the small tier: detector on train, calibrator on calibration."""
    from cascade.paths import cache_dir
    from cascade.small import SmallTier

    key = content_hash("small-tier", config.detector.model_dump(), config.calibrator.model_dump(),
                       dataset_hash(splits["train"]), dataset_hash(splits["calibration"]), config.experiment.seed)
    folder = cache_dir("small") / key[:24]
    if (folder / "manifest.json").is_file():
        return SmallTier.load(folder), 0.0
    start = time.perf_counter()
    small = SmallTier.from_config(config).fit(splits["train"], splits["calibration"])
    elapsed = time.perf_counter() - start
    small.save(folder)
    return small, elapsed


def evaluation_subset(dataset: Dataset, cap: int | None, seed: int) -> Dataset:
    """The held-out samples the experts score: all of them, or a stratified ``cap`` of them."""
    if cap is None or cap >= len(dataset):
        return dataset
    return dataset.subset(stratified_subsample(dataset.y, dataset.groups, cap, seed))


def score_all(config: CascadeConfig, splits: dict[str, Dataset], small_tier: Any, refresh: bool = False,
              progress: bool = True) -> tuple[Scored, Scored]:
    """Small tier, expert and control expert on the calibration and test evaluation subsets."""
    seed, cap = config.experiment.seed, config.experiment.test_samples
    held_out = {name: evaluation_subset(splits[name], cap, seed) for name in ("calibration", "test")}
    experts = {"expert": config.expert}
    if config.control_expert is not None:
        experts["control"] = config.control_expert
    scored: dict[str, Scored] = {}
    engines: dict[str, Any] = {}  # one expert (one engine) per tier for the whole run, started on a cache miss
    try:
        for split, dataset in held_out.items():
            small = score_small(small_tier, dataset, config.cost.small_per_call)
            by_expert, from_cache = {}, {}
            for tier, expert_config in experts.items():
                fingerprint = expert_fingerprint(expert_config, dataset.modality)
                key = content_hash("expert", fingerprint, config.cost.model_dump(), dataset_hash(dataset),
                                   dataset_hash(splits["train"]))
                by_expert[tier], from_cache[tier] = cached(
                    key, lambda ec=expert_config, t=tier, d=dataset: _score_with_expert(
                        config, ec, splits["train"], d, t, progress, engines),
                    refresh=refresh, fingerprint=fingerprint, ids=dataset.ids,
                )
            scored[split] = Scored(small=small, experts=by_expert, from_cache=from_cache)
    finally:
        for expert in engines.values():
            expert.close()
    return scored["calibration"], scored["test"]


def _score_with_expert(config: CascadeConfig, expert_config: ExpertConfig, pool: Dataset, dataset: Dataset,
                       tier: str, progress: bool, engines: dict[str, Any]) -> TierScores:
    """Score ``dataset`` with the tier's expert, made on first need and kept in ``engines`` for the next split."""
    from cascade.experts import make_expert

    if progress:
        print(f"scoring {tier} ({expert_config.display_name})"
              f" on {len(dataset)} samples; cached for later runs", flush=True)
    if config.experiment.scoring == "ray-data":
        from experiments.scoring import score_with_ray_data

        cost = config.cost
        return score_with_ray_data(lambda: make_expert(expert_config, cost=cost, pool=pool), dataset, tier,
                                   concurrency=config.experiment.ray_data_concurrency,
                                   num_cpus=config.experiment.ray_data_num_cpus)
    if tier not in engines:
        engines[tier] = make_expert(expert_config, cost=config.cost, pool=pool)
    return score_expert(engines[tier], dataset, tier, progress=progress)


def policy_scores(kind: str, calibration: Scored, test: Scored, expert: str, seed: int = 0) -> np.ndarray:
    """Fit a deferral policy on the calibration split; return its scores on the test split."""
    from policies import make_policy

    n_classes = calibration.small.probs.shape[1]
    policy = make_policy(kind, seed=seed) if kind == "random" else make_policy(kind, n_classes=n_classes)
    cal_expert, test_expert = calibration.experts[expert], test.experts[expert]
    policy.fit(calibration.small.features, calibration.small.correct, cal_expert.correct,
               cost=varying_cost(cal_expert.cost))
    if kind == "oracle":
        return policy.score(test.small.features, small_correct=test.small.correct, expert_correct=test_expert.correct)
    return policy.score(test.small.features)


def varying_cost(cost: np.ndarray) -> np.ndarray | None:
    """Per-sample expert cost for a cost-aware policy, or None where it cannot change the order
    (constant cost) or cannot be divided by (a free expert)."""
    return cost if len(cost) and np.all(cost > 0) and np.ptp(cost) > 0 else None


def frontier_tables(config: CascadeConfig, calibration: Scored, test: Scored) -> tuple[dict[str, Any], dict[str, Any]]:
    """Curves and scalars for every expert x policy (plus random mean, oracle and the upper hull)."""
    curves: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    small = test.small
    budgets = np.array(config.experiment.budgets)
    binary = small.probs.shape[1] == 2 and len(np.unique(small.y)) == 2
    for expert_name, expert in test.experts.items():
        def run(scores: np.ndarray) -> Curve:
            return sweep(scores, small.pred, expert.pred, small.y, expert_cost=expert.cost, small_cost=small.cost)

        scores = {kind: policy_scores(kind, calibration, test, expert_name) for kind in (*POLICIES, "oracle")}
        by_policy = {kind: run(values) for kind, values in scores.items()}
        by_policy["random"] = _mean_curve([run(policy_scores("random", calibration, test, expert_name, seed=s))
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
                auroc = auroc_curve(scores[kind], small.positive_prob, expert.positive_prob, small.y, budgets)
                for budget, value in zip(budgets, auroc):
                    row["at_budget"][f"{budget:g}"]["auroc"] = float(value)
            per_policy[kind] = row
        scalars[expert_name] = {"small_accuracy": small_acc, "expert_accuracy": expert_acc,
                                "oracle_best_accuracy": float(oracle.accuracy.max()), "policies": per_policy}
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
    return Curve(threshold=np.full(len(RATE_GRID), np.nan), defer_rate=RATE_GRID, **mean)


def tier_summary(config: CascadeConfig, test: Scored, small_tier: Any, splits: dict[str, Dataset]) -> dict[str, Any]:
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
    raw = small_tier.predict_raw(evaluation_subset(splits["test"], config.experiment.test_samples, config.experiment.seed).X)
    rows["small"]["ece_uncalibrated"] = float(ece(raw, test.small.y))
    return rows


def write_outputs(out: Path, results: dict[str, Any], test: Scored, small_tier: Any, splits: dict[str, Dataset]) -> None:
    from cascade.calibration import plot_reliability
    from experiments.report import markdown_report

    anchors = {}
    for expert, row in results["scalars"].items():
        anchors[expert] = [("small only", 0.0, row["small_accuracy"]), (f"{expert} only", 1.0, row["expert_accuracy"])]
    plots.frontier(results["curves"], "defer_rate", out / "frontier_defer.png", results["name"], anchors)
    cost_anchors = {
        expert: [("small only", results["tiers"]["small"]["cost_per_1k"], row["small_accuracy"]),
                 (f"{expert} only", results["tiers"][expert]["cost_per_1k"] + results["tiers"]["small"]["cost_per_1k"],
                  row["expert_accuracy"])]
        for expert, row in results["scalars"].items()
    }
    plots.frontier(results["curves"], "cost_per_1k", out / "frontier_cost.png", results["name"], cost_anchors)
    plot_reliability(test.small.probs, test.small.y, out / "reliability.png")
    if results["budget_adherence"]:
        plots.budget_adherence(results["budget_adherence"], out / "budget_adherence.png")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    (out / "report.md").write_text(markdown_report(results))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)
