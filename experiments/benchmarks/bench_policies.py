"""Policies benchmark: decision cost per sample, and budget adherence over 200 random splits.

Measures, on this machine:

* the cost of ``policy.score`` per sample (one vectorised call on 100,000 rows, and a serving
  batch of 64), of :class:`~policies.OnlineController` per decision, and of the tuners;
* budget adherence end to end (:mod:`experiments.benchmarks.adherence_e2e`), over 2,000 random
  fit / certify / test splits of a pool of raw detector outputs, synthetic (10,000 samples) and
  real SpamAssassin (TF-IDF + logistic regression on 300 labels, a kNN expert; the 2,418 pooled
  held-out mails): per split the isotonic calibrator and the policy are refitted on the fit part,
  the tuner certifies on the certify part and the rule is measured on the untouched test part;
  violation rates are compared with the exact finite-sample null (beta-binomial for deferral
  rates); plus the oracle's dominance and the hard cap under bursts.

Writes ``experiments/benchmarks/results/policies.{json,md}`` and prints the JSON.
``--only decision-cost`` runs :mod:`experiments.benchmarks.bench_decision_cost` instead (rule vs
learned policy by batch size, into ``decision_cost.{json,md}``).

    python -m experiments.benchmarks.bench_policies
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from threadpoolctl import threadpool_limits

from cascade.types import CostModel
from experiments.benchmarks.adherence_e2e import QUANTILE, RawPool, TunerFactory, null_cell, run_splits
from experiments.benchmarks.results_io import write_results
from policies import (
    AcceptedErrorTuner, BudgetTuner, ConfidencePolicy, CostTuner, DeferralData, EntropyPolicy, JointTuner,
    MarginPolicy, OnlineController, OraclePolicy, PosthocPolicy, RandomPolicy, RateTuner, deferral_curve,
    make_policy, simulate, threshold_grid, tie_keys,
)
from policies.ties import tie_keys

RESULTS = Path(__file__).resolve().parent / "results"
SIMULATED_MAX_COST = 20.0   # above every simulated expert cost here (the cost tuner refuses data above its bound)
MAX_PROMPT_TOKENS = 384.0 + 40.0   # SpamAssassin prompts are capped there, priced at 1.0 per 1k tokens


def best_time(call: Callable[[], Any], repeats: int = 7) -> float:
    """Fastest of ``repeats`` wall-clock timings, in seconds."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return min(timings)


def policy_costs(fit_split: DeferralData, rows: DeferralData) -> list[dict[str, Any]]:
    """ns per sample of ``score`` on all rows at once and on a batch of 64."""
    policies = {
        "confidence": ConfidencePolicy(n_classes=2), "margin": MarginPolicy(n_classes=2),
        "entropy": EntropyPolicy(n_classes=2), "random": RandomPolicy(seed=0),
        "never": make_policy("never"), "always": make_policy("always"),
        "posthoc (logistic)": PosthocPolicy(n_classes=2),
        "posthoc (gradient boosting)": PosthocPolicy(model="gradient-boosting", n_classes=2),
    }
    results = []
    batch = rows.features[:64]
    for name, policy in policies.items():
        policy.fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
        whole = best_time(partial(policy.score, rows.features))
        small = best_time(partial(policy.score, batch), repeats=50)
        results.append({
            "policy": name,
            "ns_per_sample": 1e9 * whole / len(rows),
            "batch64_us_per_call": 1e6 * small,
        })
    oracle = OraclePolicy()
    whole = best_time(partial(oracle.score, rows.features, rows.small_correct, rows.expert_correct))
    results.append({"policy": "oracle", "ns_per_sample": 1e9 * whole / len(rows), "batch64_us_per_call": None})
    return results


def serve(controller: OnlineController, batches: list[np.ndarray]) -> None:
    for batch in batches:
        controller.decide(batch)


def controller_costs() -> list[dict[str, Any]]:
    """ns per decision of ``OnlineController.decide`` with a hard cap, by batch size."""
    scores = np.random.default_rng(0).normal(size=65536)
    results = []
    for batch in (1, 64, 1024):
        controller = OnlineController(target=0.15, threshold=1.0, learning_rate=0.001, hard_cap=0.2, window=1000)
        batches = [scores[i:i + batch] for i in range(0, 8192 if batch == 1 else len(scores), batch)]
        elapsed = best_time(partial(serve, controller, batches), repeats=3)
        results.append({"batch": batch, "ns_per_decision": 1e9 * elapsed / sum(len(b) for b in batches)})
    return results


def tuner_costs(data: DeferralData, scores: np.ndarray, fit_scores: np.ndarray) -> list[dict[str, Any]]:
    """ms per fit on 1,000 certify samples and per 200-split batched fit."""
    tuners: dict[str, BudgetTuner] = {
        "rate (CRC)": RateTuner(0.2), "rate (Clopper-Pearson)": RateTuner(0.2, delta=0.1),
        "cost (CRC)": CostTuner(150.0, max_expert_cost=SIMULATED_MAX_COST),
        "accepted error (LTT)": AcceptedErrorTuner(0.1, 0.1, grid=threshold_grid(fit_scores)),
        "joint (LTT fixed-sequence)": JointTuner(0.1, 0.6, 0.1, grid=threshold_grid(fit_scores, max_rate=0.6)),
    }
    one = scores[:1000], data.small_correct[:1000], data.expert_cost[:1000]
    many = [values[:200_000].reshape(200, 1000) for values in (scores, data.small_correct, data.expert_cost)]
    return [
        {"tuner": name, "fit_ms": 1e3 * best_time(partial(tuner.fit, *one)),
         "fit_200_splits_ms": 1e3 * best_time(partial(tuner.fit_thresholds, *many), repeats=3)}
        for name, tuner in tuners.items()
    ]


def oracle_dominates(fit_split: DeferralData, pool: DeferralData) -> bool:
    keys = tie_keys(pool.features, 0)
    oracle = deferral_curve(OraclePolicy().score(pool.features, pool.small_correct, pool.expert_correct),
                            pool.small_correct, pool.expert_correct, keys)
    n_classes = pool.n_classes
    for policy in (ConfidencePolicy(n_classes), MarginPolicy(n_classes), EntropyPolicy(n_classes), RandomPolicy(),
                   PosthocPolicy(n_classes=n_classes)):
        policy.fit(fit_split.features, fit_split.small_correct, fit_split.expert_correct)
        curve = deferral_curve(policy.score(pool.features), pool.small_correct, pool.expert_correct, keys)
        if np.any(curve > oracle + 1e-12):
            return False
    return True


def burst_cap() -> dict[str, Any]:
    """Max deferrals in any window of 500 requests under bursts, against the cap of 100."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=50000)
    for start in rng.integers(0, 49000, 20):
        scores[start:start + rng.integers(100, 1000)] = 50.0
    controller = OnlineController(target=0.1, threshold=1.28, learning_rate=0.01, hard_cap=0.2, window=500)
    masks, start = [], 0
    while start < len(scores):
        size = int(rng.integers(1, 700))
        masks.append(controller.decide(scores[start:start + size]))
        start += size
    counts = np.concatenate([[0], np.cumsum(np.concatenate(masks))])
    worst = int((counts[500:] - counts[:-500]).max())
    return {"window": 500, "cap_deferrals": controller.cap_deferrals, "max_window_deferrals": worst,
            "pass": worst <= controller.cap_deferrals}


def spamassassin(seed: int = 0) -> tuple[DeferralData, DeferralData, RawPool] | None:
    """(policy-fit split, held-out pool) of real calibrated detector outputs and the same pool raw, or None."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from cascade import data

    try:
        train = data.load("spamassassin", split="train", seed=seed)
        pool = [data.load("spamassassin", split=split, seed=seed) for split in ("calibration", "test")]
    except data.DatasetMissing:
        return None
    order = np.random.default_rng(seed).permutation(len(train))
    small_part, calibrator_part, policy_part, expert_part = np.split(order, [300, 800, 1800])
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=20000).fit(train.texts)
    train_x = vectorizer.transform(train.texts)
    small = LogisticRegression(C=10.0, max_iter=1000).fit(train_x[small_part], train.y[small_part])
    calibrated = CalibratedClassifierCV(FrozenEstimator(small), method="sigmoid")
    calibrated.fit(train_x[calibrator_part], train.y[calibrator_part])
    expert = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(train_x[expert_part], train.y[expert_part])
    prices = CostModel(small_per_call=0.0, expert_per_call=0.0, expert_per_1k_prompt_tokens=1.0,
                       expert_per_1k_completion_tokens=0.0)

    def outcomes(texts: list[str], labels: np.ndarray) -> DeferralData:
        x = vectorizer.transform(texts)
        probabilities = calibrated.predict_proba(x)
        tokens = np.minimum(np.array([len(t) for t in texts]) / 4.0 + 40.0, MAX_PROMPT_TOKENS)
        return DeferralData(probabilities, probabilities.argmax(1) == labels, expert.predict(x) == labels,
                            prices.expert_cost(prompt_tokens=tokens))

    texts = list(train.texts or [])
    held_texts, held_y = (pool[0].texts or []) + (pool[1].texts or []), np.concatenate([pool[0].y, pool[1].y])
    held = outcomes(held_texts, held_y)
    raw = RawPool(small.predict_proba(vectorizer.transform(held_texts)), held_y, held.expert_correct,
                  held.expert_cost, tie_keys(held_texts, seed=0))
    return outcomes([texts[i] for i in policy_part], train.y[policy_part]), held, raw


def synthetic_pool(data: DeferralData) -> RawPool:
    """A simulated pool as raw outputs (its true probabilities, re-calibrated per split like real ones);
    expert costs are capped at the declared bound, as a context length caps a real expert's."""
    probs = data.features[:, :2]
    predicted = probs.argmax(axis=1)
    y = np.where(data.small_correct, predicted, 1 - predicted)
    return RawPool(probs, y, data.expert_correct, np.minimum(data.expert_cost, SIMULATED_MAX_COST),
                   tie_keys(data.features, seed=0), true_probabilities=True)


def adherence_block(name: str, fit_split: DeferralData, pool: DeferralData, raw: RawPool | Callable[[int], RawPool],
                    sizes: tuple[int, int], splits: int, tuners: dict[str, TunerFactory],
                    population: Callable[[int], RawPool] | None = None, test_size: int = 0) -> dict[str, Any]:
    return {
        "dataset": name, "pool": None if callable(raw) else len(raw), "fit": sizes[0], "certify": sizes[1],
        "test": len(pool) - sum(sizes) if population is None else test_size,
        "fresh_draws": population is not None, "splits": splits, "policy": "confidence", "calibrator": "isotonic",
        "small_accuracy": float(pool.small_correct.mean()), "expert_accuracy": float(pool.expert_correct.mean()),
        "oracle_dominates_every_policy": oracle_dominates(fit_split, pool),
        "tuners": run_splits(raw, tuners, sizes, splits, seed=0, population=population),
    }


def grid_tuner(build: Callable[..., BudgetTuner], max_rate: float = 1.0) -> TunerFactory:
    """A Learn-then-Test tuner whose grid is placed on the split's fit part."""
    return lambda scores, keys: build(grid=threshold_grid(scores, 20, max_rate, keys))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Policies benchmark",
        "",
        f"{report['machine']}; numpy {report['numpy']}, scikit-learn {report['sklearn']}; {report['date']}.",
        "Regenerate with `python -m experiments.benchmarks.bench_policies`. A sample is deferred when "
        "`score > threshold`.",
        "",
        "## Decision cost",
        "",
        "| policy | ns / sample (100k rows, one call) | µs / call (batch of 64) |",
        "|---|---:|---:|",
    ]
    for row in report["policy_cost"]:
        batch = "–" if row["batch64_us_per_call"] is None else f"{row['batch64_us_per_call']:.1f}"
        lines.append(f"| {row['policy']} | {row['ns_per_sample']:.1f} | {batch} |")
    lines += ["", "| online controller (hard cap on) batch size | ns / decision |", "|---:|---:|"]
    lines += [f"| {row['batch']} | {row['ns_per_decision']:.0f} |" for row in report["controller_cost"]]
    lines += ["", "| tuner | fit, n=1000 (ms) | 200 splits at once (ms) |", "|---|---:|---:|"]
    lines += [f"| {row['tuner']} | {row['fit_ms']:.2f} | {row['fit_200_splits_ms']:.1f} |"
              for row in report["tuner_cost"]]
    lines += [
        "", "## Budget adherence, end to end", "",
        "Each split cuts the pool of raw detector outputs at random into fit / certify / test parts; the isotonic "
        "calibrator and the confidence policy are refitted on the fit part (isotonic plateaus tie many scores, "
        "broken per sample by content-hashed keys), Learn-then-Test grids are placed on the fit part, the tuner "
        "certifies on the certify part and the rule is measured on the test part, which nothing saw. *Null*: what "
        "the guarantee predicts for these finite parts. Deferral rate with δ: the certified rule defers k of n "
        "certify samples, so the test part's deferred count is exactly BetaBinomial(m, k+1, n−k) and P(test rate > β) "
        "is known (`expected`); the population-level P(rate > β) = P(Beta(k+1, n−k) > β) must be ≤ δ. In "
        "expectation: the exact mean is (k+1)/(n+1); pass = the mean over splits is within 3 standard errors above "
        "β and at least 0.9 β (ties must not starve the budget). Accepted error and joint: the null is the bound "
        f"δ + (1−δ)·P(Bin(a, α) > αa) (a = accepted test samples; the worst case the guarantee allows, loose on "
        f"finite real test parts); on simulated data, where the test part measures the true error, it is δ. "
        f"Intervals: the "
        f"{QUANTILE:.1%} quantiles of Binomial(splits, null) / splits. Refusals are not violations.",
    ]
    for block in report["adherence"]:
        if "skipped" in block:
            lines += ["", f"### {block['dataset']}", "", block["skipped"]]
            continue
        lines += [
            "", f"### {block['dataset']}", "",
            (f"Fresh simulated fit / certify / test samples every split ({block['fit']} / {block['certify']} / "
             f"{block['test']}; the test part scored with its known error odds); "
             if block.get("fresh_draws") else
             f"Pool {block['pool']} ({block['fit']} fit / {block['certify']} certify / {block['test']} test per "
             "split); ") + f"{block['splits']} splits; {block['calibrator']} calibrator and {block['policy']} policy "
            "refitted per "
            f"split; small-tier accuracy {block['small_accuracy']:.3f}, expert {block['expert_accuracy']:.3f}. "
            f"Oracle dominates every policy: **{block['oracle_dominates_every_policy']}**.",
            "",
            "| tuner | guarantee | metric: target → mean realised (± s.e.) | violated | null | refused | pass |",
            "|---|---|---|---:|---|---:|:---:|",
        ]
        for row in block["tuners"]:
            metrics = "; ".join(f"{m}: {s['target']:g} → {s['mean']:.4g} (± {s['standard_error']:.2g})"
                                for m, s in row["metrics"].items())
            guarantee = row["guarantee"] + ("" if row["delta"] is None else f", δ={row['delta']:g}")
            lines.append(f"| {row['tuner']} | {guarantee} | {metrics} | {row['violation_rate']:.4f} | "
                         f"{null_cell(row['null'])} | {row['refusal_rate']:.3f} | {'✓' if row['null']['pass'] else '✗'} |")
    cap = report["burst_cap"]
    lines += [
        "", "## Hard cap under bursts", "",
        f"Max deferrals in any {cap['window']} consecutive requests: {cap['max_window_deferrals']} "
        f"(cap {cap['cap_deferrals']}); {'✓' if cap['pass'] else '✗'}.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=["decision-cost"],
                        help="decision-cost: only the rule-vs-learned decision cost (bench_decision_cost)")
    args = parser.parse_args(argv)
    if args.only == "decision-cost":
        from experiments.benchmarks import bench_decision_cost

        return bench_decision_cost.main(["--out", str(args.out)])

    synthetic_fit = simulate(4000, seed=1)
    with threadpool_limits(limits=1, user_api="openmp"):
        report: dict[str, Any] = {
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, 1 OpenMP thread for scoring",
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "policy_cost": policy_costs(synthetic_fit, simulate(100_000, seed=3)),
        }
    report["controller_cost"] = controller_costs()
    big = simulate(200_000, seed=4)
    fit_scores = ConfidencePolicy(n_classes=2).score(synthetic_fit.features)
    report["tuner_cost"] = tuner_costs(big, ConfidencePolicy(n_classes=2).score(big.features), fit_scores)
    synthetic_tuners: dict[str, TunerFactory] = {
        "rate β=0.2 (CRC)": lambda *_: RateTuner(0.2),
        "rate β=0.2 (Clopper-Pearson)": lambda *_: RateTuner(0.2, delta=0.1),
        "cost ≤ 150 per 1k (CRC)": lambda *_: CostTuner(150.0, max_expert_cost=SIMULATED_MAX_COST),
        "accepted error ≤ 0.1 (LTT Bonferroni)": grid_tuner(partial(AcceptedErrorTuner, 0.1, 0.1)),
        "joint error ≤ 0.1, rate ≤ 0.6 (LTT fixed-sequence)": grid_tuner(partial(JointTuner, 0.1, 0.6, 0.1), 0.6),
        "joint error ≤ 0.1, rate ≤ 0.6 (LTT Bonferroni)":
            grid_tuner(partial(JointTuner, 0.1, 0.6, 0.1, "bonferroni"), 0.6),
    }
    synthetic = simulate(10000, seed=11)
    report["adherence"] = [adherence_block("synthetic", synthetic_fit, synthetic,
                                           lambda split: synthetic_pool(simulate(1500, seed=1000 + split)),
                                           (1000, 500), args.splits, synthetic_tuners,
                                           lambda split: synthetic_pool(simulate(20_000, seed=500_000 + split)),
                                           test_size=20_000)]
    spam = spamassassin()
    if spam is None:
        report["adherence"].append({"dataset": "SpamAssassin",
                                    "skipped": "not fetched: run `python -m cascade data fetch spamassassin`"})
    else:
        spam_tuners: dict[str, TunerFactory] = {
            "rate β=0.15 (CRC)": lambda *_: RateTuner(0.15),
            "rate β=0.15 (Clopper-Pearson)": lambda *_: RateTuner(0.15, delta=0.1),
            "cost ≤ 20 per 1k (CRC)": lambda *_: CostTuner(20.0, max_expert_cost=MAX_PROMPT_TOKENS / 1000.0),
            "accepted error ≤ 0.03 (LTT Bonferroni)": grid_tuner(partial(AcceptedErrorTuner, 0.03, 0.1)),
            "joint error ≤ 0.025, rate ≤ 0.3 (LTT fixed-sequence)": grid_tuner(partial(JointTuner, 0.025, 0.3, 0.1), 0.3),
        }
        report["adherence"].append(adherence_block("SpamAssassin", *spam, (600, 600), args.splits, spam_tuners))
    report["burst_cap"] = burst_cap()

    write_results(args.out, "policies", report, markdown)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
