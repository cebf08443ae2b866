"""Learned deferral policy against Chow's rule (confidence), paired over many random fit/evaluation splits.

For each case (a shipped config with a cheap expert) the tiers are fitted once (data seed 0) and
every held-out sample (fit, certify and test parts) is scored by both tiers, from the score-once
cache. Then, for each of ``--seeds`` seeds, the held-out pool is cut at random into a fitting half
(where the learned policy fits) and an evaluation half (where both policies are measured), the
protocol of the harness's budget-adherence study. With ``--crossfit``, the learned policy also
fits on out-of-fold outputs over the train split (:mod:`cascade.crossfit`), and chooses among
rule / learned / blend on the fitting half only (the rows drawn like serving traffic).

Per policy and seed: accuracy at 5/10/20/30 % deferral (ties deferred in random order, counted at
their expected value), the area under the accuracy-vs-deferral curve over [0, 1], and APGR where
the expert is better than the small tier; then paired differences learned - confidence with 95 %
t-intervals over seeds. Writes ``experiments/benchmarks/results/policy_comparison.{json,md}``.

    python -m experiments.benchmarks.bench_policy_comparison --seeds 20 --crossfit
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cascade.config import CascadeConfig
from policies import ConfidencePolicy, LearnedPolicy, expected_deferral_gain
from experiments.benchmarks.results_io import write_results

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RESULTS = Path(__file__).resolve().parent / "results"
RATES = (0.05, 0.1, 0.2, 0.3)
CONTROL = {"kind": "knn-vote", "shots": 4}
CASES: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"config": "fashion-mnist.yaml", "input_view": 8,
                      "note": "pixel LR -> CNN trained on the whole train split"},
    "fashion-mnist-specialist": {"config": "fashion-mnist-specialist.yaml", "input_view": 8,
                                 "note": "pixel LR -> CNN trained on tops only; shirt and sandal are anomalies"},
    "shuttle": {"config": "shuttle.yaml", "input_view": 9, "control": ["normal", "anomaly"],
                "note": "IsolationForest -> knn-vote control (SmolLM2 replaced: too slow on 2 cores)"},
    "shuttle-supervised": {"config": "shuttle-supervised.yaml", "input_view": 9, "control": ["normal", "anomaly"],
                           "note": "gradient boosting on 300 labelled rows -> knn-vote control (SmolLM2 replaced)"},
    "spamassassin": {"config": "spamassassin.yaml", "input_view": 8, "control": ["ham", "spam"],
                     "note": "TF-IDF LR on 200 labels -> knn-vote control (SmolLM2 replaced: too slow on 2 cores)"},
    "spamassassin-oneclass": {"config": "spamassassin-oneclass.yaml", "input_view": 8, "control": ["ham", "spam"],
                              "note": "TF-IDF kNN fitted on ham only -> knn-vote control (SmolLM2 replaced)"},
}


def case_config(case: dict[str, Any]) -> CascadeConfig:
    """The shipped config with every held-out sample scored, the input view and the predicted expert cost on,
    and a cheap expert."""
    raw = CascadeConfig.from_yaml(CONFIGS / case["config"]).model_dump(mode="json")
    raw["detector"].update(input_view=case["input_view"], cost_feature=True)
    raw["experiment"]["max_scored_per_split"] = None
    if "control" in case:
        raw["expert"] = {**CONTROL, "labels": case["control"]}
        raw["control_expert"] = None
    return CascadeConfig.from_dict(raw, source=case["config"])


def outcomes(config: CascadeConfig, crossfit_folds: int) -> dict[str, Any]:
    """Held-out features and correctness of both tiers (and cross-fitted training outcomes)."""
    from cascade.data.roles import load_roles
    from cascade.small import fit_small_tier
    from policies.held_out import score_held_out

    roles = load_roles(config)
    small_tier, _ = fit_small_tier(config, roles)
    parts = score_held_out(config, roles, small_tier, progress=False)
    scored = (parts.fit, parts.certify, parts.test)
    held = {
        "features": np.concatenate([part.small.features for part in scored]),
        "small": np.concatenate([part.small.correct for part in scored]),
        "expert": np.concatenate([part.experts["expert"].correct for part in scored]),
        "n_classes": small_tier.n_classes,
    }
    if crossfit_folds:
        from cascade.crossfit import crossfit

        fit = crossfit(config, roles, small_tier, folds=crossfit_folds)
        held["train"] = {"features": fit.small.features, "small": fit.small.correct,
                         "expert": fit.experts["expert"].correct, "usage": fit.expert_usage["expert"]}
    return held


def metrics(scores: np.ndarray, small: np.ndarray, expert: np.ndarray) -> dict[str, float]:
    """Accuracy at each rate, the area under the accuracy-deferral curve, APGR (NaN if undefined)."""
    accuracy = small.mean() + expected_deferral_gain(scores, expert.astype(float) - small)
    n = len(small)
    row = {f"acc@{rate:g}": float(accuracy[int(round(rate * n))]) for rate in RATES}
    row["area"] = float(np.trapezoid(accuracy, dx=1.0 / n))
    gap = expert.mean() - small.mean()
    row["apgr"] = float(np.trapezoid((accuracy - small.mean()) / gap, dx=1.0 / n)) if gap > 0 else float("nan")
    return row


def compare(held: dict[str, Any], seeds: int) -> dict[str, Any]:
    """Per seed: fit on a random half, measure both policies on the other half; paired summaries."""
    n, k = len(held["small"]), held["n_classes"]
    per_policy: dict[str, list[dict[str, float]]] = {"confidence": [], "learned": []}
    variants = ["learned"] + (["learned+crossfit"] if "train" in held else [])
    per_policy.update({name: [] for name in variants})
    choices: dict[str, list[str]] = {name: [] for name in variants}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(n)
        fit, evaluate = order[: n // 2], order[n // 2:]
        small, expert, features = held["small"][evaluate], held["expert"][evaluate], held["features"][evaluate]
        per_policy["confidence"].append(metrics(ConfidencePolicy(n_classes=k).score(features), small, expert))
        for name in variants:
            parts = [(held["features"][fit], held["small"][fit], held["expert"][fit], np.ones(len(fit), dtype=bool))]
            if name == "learned+crossfit":
                train = held["train"]
                parts.append((train["features"], train["small"], train["expert"], np.zeros(len(train["small"]), bool)))
            features_, small_, expert_, exchangeable = (np.concatenate(p) for p in zip(*parts))
            policy = LearnedPolicy(n_classes=k, random_state=seed).fit(features_, small_, expert_,
                                                                       exchangeable=exchangeable)
            choices[name].append(policy.choice_)
            per_policy[name].append(metrics(policy.score(features), small, expert))
    keys = list(per_policy["confidence"][0])
    summary: dict[str, Any] = {"policies": {}, "differences": {}, "choices": {}}
    for name, rows in per_policy.items():
        values = {key: np.array([r[key] for r in rows]) for key in keys}
        summary["policies"][name] = {key: float("nan") if np.isnan(v).all() else float(v.mean())
                                     for key, v in values.items()}
    for name in variants:
        summary["choices"][name] = {c: choices[name].count(c) for c in sorted(set(choices[name]))}
        summary["differences"][name] = {
            key: interval(np.array([a[key] - b[key] for a, b in zip(per_policy[name], per_policy["confidence"])]))
            for key in keys}
    return summary


def interval(differences: np.ndarray) -> dict[str, float]:
    """Mean with a 95 % t-interval over seeds (NaN when undefined)."""
    if np.isnan(differences).any():
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
    half = stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / np.sqrt(len(differences))
    mean = float(differences.mean())
    return {"mean": mean, "low": mean - float(half), "high": mean + float(half)}


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Learned deferral policy vs Chow's rule (confidence)", "",
             f"{report['date']}; {report['seeds']} seeds (random halves of the held-out pool: fit / evaluate); "
             "regenerate with `python -m experiments.benchmarks.bench_policy_comparison "
             f"--seeds {report['seeds']}{' --crossfit' if report['crossfit_folds'] else ''}`. "
             f"Shared 2-core machine (load average {report.get('load_average', float('nan')):.1f} at the end). "
             "A difference is significant when its 95 % interval excludes 0: **below** if the upper end is "
             "< 0, **above** if the lower end is > 0.", ""]
    keys = [f"acc@{rate:g}" for rate in RATES] + ["area", "apgr"]
    for name, case in report["cases"].items():
        lines += [f"## {name}", "", f"{case['note']}; {case['held_out']} held-out samples, small tier "
                  f"{case['small_accuracy']:.3f}, expert {case['expert_accuracy']:.3f}; {case['seconds']:.0f} s.", ""]
        if "crossfit_usage" in case:
            usage = case["crossfit_usage"]
            lines += [f"Cross-fitting ({report['crossfit_folds']} folds) added {case['crossfit_samples']} training "
                      f"samples: {usage['calls']} extra expert calls, {usage['prompt_tokens']} prompt tokens, "
                      f"cost {usage['cost']:.1f} units.", ""]
        summary = case["summary"]
        lines += ["| policy | " + " | ".join(keys) + " | served (seeds) |", "|---|" + "---:|" * len(keys) + "---|"]
        for policy, row in summary["policies"].items():
            served = ", ".join(f"{c} {n}" for c, n in summary["choices"].get(policy, {}).items()) or "–"
            lines.append(f"| {policy} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + f" | {served} |")
        for policy, row in summary["differences"].items():
            cells = [("n/a" if np.isnan(row[k]["mean"]) else
                      f"{row[k]['mean']:+.4f} [{row[k]['low']:+.4f}, {row[k]['high']:+.4f}]") for k in keys]
            lines.append(f"| {policy} − confidence (95% CI) | " + " | ".join(cells) + " | |")
        lines.append("")
        for policy, row in summary["differences"].items():
            below = [k for k in keys if row[k]["high"] < 0]
            above = [k for k in keys if row[k]["low"] > 0]
            lines.append(f"- {policy}: significantly below confidence at {', '.join(below) or 'no budget'}; "
                         f"above at {', '.join(above) or 'none'}.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--crossfit", type=int, nargs="?", const=5, default=0, metavar="FOLDS",
                        help="also fit the learned policy on out-of-fold training outputs (default 5 folds)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "seeds": args.seeds,
                              "crossfit_folds": args.crossfit, "rates": list(RATES), "cases": {}}
    previous = args.out / "policy_comparison.json"
    if previous.is_file():  # cases run separately add up, when run with the same settings
        earlier = json.loads(previous.read_text())
        if (earlier["seeds"], earlier["crossfit_folds"]) == (args.seeds, args.crossfit):
            report["cases"] = {name: case for name, case in earlier["cases"].items() if name not in args.cases}
    for name in args.cases:
        started = time.perf_counter()
        held = outcomes(case_config(CASES[name]), args.crossfit)
        case = {"note": CASES[name]["note"], "held_out": len(held["small"]),
                "small_accuracy": float(held["small"].mean()), "expert_accuracy": float(held["expert"].mean()),
                "summary": compare(held, args.seeds)}
        if "train" in held:
            case.update(crossfit_samples=len(held["train"]["small"]), crossfit_usage=held["train"]["usage"])
        case["seconds"] = time.perf_counter() - started
        report["cases"][name] = case
        print(f"{name}: done in {case['seconds']:.0f} s", flush=True)
        report["load_average"] = os.getloadavg()[0]
        write_results(args.out, "policy_comparison", report, markdown)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
