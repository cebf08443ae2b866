"""Same labels, bigger model: does an expert that learns from the small tier's own labelled mails earn the deferral?

On SpamAssassin (``experiments/configs/spamassassin.yaml``) with ``dataset.label_budget`` set to each of
``--budgets`` and the data seed to each of ``--seeds``, the small tier is the harness's own
(:func:`cascade.small.fit_small_tier`: TF-IDF LR on the labelled pool, Platt calibrator on the fit part;
``--small raw`` uses the uncalibrated detector instead). Every candidate expert learns from exactly that
labelled pool (:func:`cascade.data.roles.labelled_pool`): LR on MiniLM embeddings, the vote of 6
MiniLM-retrieved neighbours (the config's control expert), one LR on TF-IDF and MiniLM features
together, the average of the small tier's and the vote's probabilities, and with ``--finetune`` (minutes)
MiniLM fine-tuned as a classifier. On a stratified ``--test`` mails of the test split, the cascade
answers with the expert on the least confident 10 / 20 / 30 % of the small tier's answers (Chow's
rule, ties in mail order). Per budget and seed: the small tier's accuracy, each expert's alone, the
cascade's, the mistakes the expert fixes and the right answers it breaks at 20 %, and a perfect
expert's accuracy at 20 %; per (labels, expert) over seeds: the mean change at 20 % and a two-sided
sign test of fixed against broken. Writes ``experiments/benchmarks/results/same_labels.{json,md}``.

    python -m experiments.benchmarks.bench_same_labels [--budgets 50 100 200] [--seeds 0 1 2] [--test 600] [--finetune]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from cascade.config import CascadeConfig
from cascade.logs import library_logs
from experiments.benchmarks.results_io import write_results
from policies import ConfidencePolicy

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "spamassassin.yaml"
RESULTS = Path(__file__).resolve().parent / "results"
RATES = (0.1, 0.2, 0.3)
HEADLINE = 0.2
ALPHA = 0.05
SHOTS = 6
VOTE = f"knn-vote ({SHOTS} neighbours)"
FINETUNE_STEPS = 60
COMMAND = "python -m experiments.benchmarks.bench_same_labels"


# ---- metrics (pure) -------------------------------------------------------------------------------------------
def deferred_mask(small_probs: np.ndarray, rate: float) -> np.ndarray:
    """The ``round(rate * n)`` answers with the lowest max-probability (Chow's rule, ties in sample order)."""
    small_probs = np.asarray(small_probs, dtype=float)
    score = ConfidencePolicy(n_classes=small_probs.shape[1]).score(small_probs)
    mask = np.zeros(len(small_probs), dtype=bool)
    mask[np.argsort(-score, kind="stable")[: int(round(rate * len(small_probs)))]] = True
    return mask


def cascade_accuracy(y: np.ndarray, small_probs: np.ndarray, expert_probs: np.ndarray, rate: float) -> float:
    """Accuracy when the expert answers the deferred ``rate`` and the small tier the rest."""
    pred = np.where(deferred_mask(small_probs, rate), np.argmax(expert_probs, 1), np.argmax(small_probs, 1))
    return float(np.mean(pred == np.asarray(y)))


def fixed_broken(y: np.ndarray, small_probs: np.ndarray, expert_probs: np.ndarray, rate: float) -> tuple[int, int]:
    """Deferred answers the expert turns from wrong to right (fixed) and from right to wrong (broken)."""
    y, mask = np.asarray(y), deferred_mask(small_probs, rate)
    small_ok, expert_ok = np.argmax(small_probs, 1) == y, np.argmax(expert_probs, 1) == y
    return int(np.sum(mask & ~small_ok & expert_ok)), int(np.sum(mask & small_ok & ~expert_ok))


def oracle_accuracy(y: np.ndarray, small_probs: np.ndarray, rate: float) -> float:
    """Cascade accuracy with an expert that is always right: the ceiling of deferring ``rate``."""
    return float(np.mean((np.argmax(small_probs, 1) == np.asarray(y)) | deferred_mask(small_probs, rate)))


def sign_test(fixed: int, broken: int) -> float:
    """Two-sided sign test p-value of fixed against broken (1 when the expert changed nothing)."""
    return float(binomtest(fixed, fixed + broken).pvalue) if fixed + broken else 1.0


def run_row(y: np.ndarray, small_probs: np.ndarray, experts: dict[str, np.ndarray]) -> dict[str, Any]:
    """One budget and seed: the small tier's numbers and each expert's alone and in the cascade."""
    y = np.asarray(y)
    row: dict[str, Any] = {"small": {"accuracy": float(np.mean(np.argmax(small_probs, 1) == y)),
                                     "oracle": oracle_accuracy(y, small_probs, HEADLINE)}, "experts": {}}
    for name, probs in experts.items():
        fixed, broken = fixed_broken(y, small_probs, probs, HEADLINE)
        row["experts"][name] = {"accuracy": float(np.mean(np.argmax(probs, 1) == y)), "fixed": fixed,
                                "broken": broken, "cascade": {f"{r:g}": cascade_accuracy(y, small_probs, probs, r)
                                                              for r in RATES}}
    return row


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (labels, expert): means over seeds, the change at the headline rate per seed, pooled fixed / broken."""
    groups: dict[tuple[int, str], list[tuple[int, float, dict[str, Any]]]] = {}
    for run in runs:
        for name, expert in run["experts"].items():
            groups.setdefault((run["labels"], name), []).append((run["seed"], run["small"]["accuracy"], expert))
    rows = []
    for (labels, name), items in groups.items():
        items.sort(key=lambda item: item[0])
        change = [100 * (e["cascade"][f"{HEADLINE:g}"] - small) for _, small, e in items]
        fixed, broken = sum(e["fixed"] for *_, e in items), sum(e["broken"] for *_, e in items)
        rows.append({"labels": labels, "expert": name, "seeds": [s for s, *_ in items],
                     "small": float(np.mean([small for _, small, _ in items])),
                     "alone": float(np.mean([e["accuracy"] for *_, e in items])),
                     "cascade": {f"{r:g}": float(np.mean([e["cascade"][f"{r:g}"] for *_, e in items])) for r in RATES},
                     "change_points": float(np.mean(change)), "change_per_seed": change,
                     "fixed": fixed, "broken": broken, "p": sign_test(fixed, broken)})
    return rows


def verdict(row: dict[str, Any], alpha: float = ALPHA) -> str:
    """``earns its place`` / ``hurts`` when the sign test is significant and the mean change at the headline
    rate is above / below 0, else ``no significant difference``."""
    if row["p"] >= alpha or row["change_points"] == 0:
        return "no significant difference"
    return "earns its place" if row["change_points"] > 0 else "hurts"


def conclusion(summary: list[dict[str, Any]], alpha: float = ALPHA) -> list[str]:
    """Plain-language lines derived from the summary rows: per label budget, then across them."""
    lines, tests = [], len(summary)
    for labels in sorted({row["labels"] for row in summary}):
        rows = sorted((r for r in summary if r["labels"] == labels), key=lambda r: -r["change_points"])
        earn = [r for r in rows if verdict(r, alpha) == "earns its place"]
        hurt = [r for r in rows if verdict(r, alpha) == "hurts"]
        best = rows[0]
        text = f"- **{labels} labels**: "
        text += ("deferring 20 % earns its place with " + ", ".join(
            f"{r['expert']} ({r['change_points']:+.1f} points, {r['fixed']}/{r['broken']} fixed/broken, "
            f"p = {r['p']:.3f})" for r in earn) if earn else
            f"no expert beats the small tier significantly (best mean change {best['change_points']:+.1f} points, "
            f"{best['expert']}, p = {best['p']:.3f})")
        if hurt:
            text += "; significantly worse: " + ", ".join(f"{r['expert']} ({r['change_points']:+.1f})" for r in hurt)
        lines.append(text + ".")
    significant = [r for r in summary if verdict(r, alpha) != "no significant difference"]
    strict = [r for r in significant if r["p"] < alpha / tests]
    flat: dict[str, list[int]] = {}  # experts whose cascade is as good as answering every mail with them
    for r in summary:
        if all(abs(r["cascade"][f"{rate:g}"] - r["alone"]) < 5e-4 for rate in RATES):
            flat.setdefault(r["expert"], []).append(r["labels"])
    lines += [f"- {name} (at {', '.join(map(str, labels))} labels): the cascade's accuracy at 10, 20 and 30 % equals "
              "its accuracy alone (mean over seeds), so deferring more than 10 % to it, or answering every mail "
              "with it, gains nothing further." for name, labels in flat.items()]
    changes = [r["change_points"] for r in summary]
    lines.append(f"- Mean change at 20 % over the {tests} (labels, expert) pairs: {min(changes):+.1f} to "
                 f"{max(changes):+.1f} points, positive for {sum(c > 0 for c in changes)} of them.")
    lines.append(f"- {tests} sign tests at p < {alpha:g}: about {alpha * tests:.1f} would pass by chance alone; "
                 f"{len(significant)} passed; " + (
                     f"{len(strict)} survive Bonferroni (p < {alpha / tests:.4f}): " + ", ".join(
                         f"{r['expert']} at {r['labels']} labels" for r in strict) if strict else
                     f"none survives Bonferroni (p < {alpha / tests:.4f})") + ".")
    return lines


# ---- the experiment -------------------------------------------------------------------------------------------
def expert_probs(small: Any, small_probs: np.ndarray, pool: Any, texts: list[str], seed: int,
                 finetune: bool) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every candidate expert, each trained on ``pool`` only, on ``texts``; and the seconds each took."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from cascade.config import ExpertConfig
    from cascade.detectors.embedding import EmbeddingLogistic
    from cascade.embeddings import shared_embedder
    from cascade.experts import make_expert

    def concat() -> np.ndarray:  # the small tier's fitted TF-IDF next to MiniLM embeddings
        tfidf, embed = small.detector.pipeline_.named_steps["tfidf"], shared_embedder("minilm").encode
        train = sp.hstack([tfidf.transform(pool.texts), sp.csr_matrix(embed(pool.texts))]).tocsr()
        model = LogisticRegression(C=small.detector.C, class_weight="balanced", max_iter=2000).fit(train, pool.y)
        return model.predict_proba(sp.hstack([tfidf.transform(texts), sp.csr_matrix(embed(texts))]).tocsr())

    vote = make_expert(ExpertConfig(kind="knn-vote", shots=SHOTS, labels=["ham", "spam"]), pool=pool)
    makers = {"embedding-lr": lambda: EmbeddingLogistic().fit(pool.texts, pool.y).predict_proba(texts),
              VOTE: lambda: vote.judge(texts).probs,
              "LR on TF-IDF + MiniLM": concat}
    if finetune:
        from cascade.detectors.finetune import MiniLMClassifier

        makers[f"MiniLM fine-tuned ({FINETUNE_STEPS} steps)"] = lambda: (
            MiniLMClassifier(max_steps=FINETUNE_STEPS, seed=seed).fit(pool.texts, pool.y).predict_proba(texts))
    probs, seconds = {}, {}
    for name, make in makers.items():
        start = time.perf_counter()
        probs[name] = np.asarray(make(), dtype=float)
        seconds[name] = time.perf_counter() - start
    probs["avg(small, knn-vote)"] = (small_probs + probs[VOTE]) / 2
    seconds["avg(small, knn-vote)"] = seconds[VOTE]
    return probs, seconds


def run(labels: int, seed: int, test_cap: int, finetune: bool, small_kind: str) -> dict[str, Any]:
    """One label budget and data seed, end to end."""
    from cascade.data.roles import labelled_pool, load_roles
    from cascade.small import fit_small_tier
    from policies.held_out import evaluation_index

    base = CascadeConfig.from_yaml(CONFIG)
    config = base.model_copy(update={"dataset": base.dataset.model_copy(update={"label_budget": labels}),
                                     "experiment": base.experiment.model_copy(update={"seed": seed})})
    roles = load_roles(config)
    pool = labelled_pool(config, roles.train)
    small, _ = fit_small_tier(config, roles)
    assert len(small.training_subset(roles.train)) == len(pool), "the small tier learns from the labelled pool"
    test = roles.test.subset(evaluation_index(roles.test, test_cap, seed))
    texts, y = list(test.texts or []), np.asarray(test.y)
    small_probs = small.predict_proba(texts) if small_kind == "calibrated" else small.predict_raw(texts)
    probs, seconds = expert_probs(small, small_probs, pool, texts, seed, finetune)
    row = run_row(y, small_probs, probs)
    row["small"]["uncalibrated"] = float(np.mean(np.argmax(small.predict_raw(texts), 1) == y))
    for name, seconds_ in seconds.items():
        row["experts"][name]["seconds"] = seconds_
    return {"labels": labels, "seed": seed, "pool": len(pool), "pool_spam": int(np.sum(pool.y)), "test": len(y),
            "test_spam": int(np.sum(y)), "calibration_mails": len(roles.fit_index), **row}


def markdown(report: dict[str, Any]) -> str:
    small = ("the harness's small tier (`cascade.small.fit_small_tier`): TF-IDF LR on the labelled pool, its Platt "
             "calibrator fitted on the held-out fit part "
             f"({report['runs'][0]['calibration_mails']} mails whose labels the experts do not see); deferral order "
             "and answers are the calibrated ones" if report["small_tier"] == "calibrated" else
             "the uncalibrated TF-IDF LR of the harness's small tier, fitted on the labelled pool only")
    lines = ["# Same labels: does an expert trained on the small tier's own labels earn the deferral?", "",
             f"SpamAssassin (`{report['config']}`), label budgets {', '.join(map(str, report['budgets']))}, data seeds "
             f"{', '.join(map(str, report['seeds']))}, {report['test']} stratified test mails per seed; "
             f"{report['seconds']:.0f} s on a shared 2-core machine. Regenerate with "
             f"`{report.get('recorded', {}).get('command', COMMAND)}`.", "",
             f"Small tier: {small}. Every expert learns from exactly the same labelled pool (uncalibrated; its "
             "answer is its most likely label). The cascade gives the expert the small tier's least confident "
             "10 / 20 / 30 % (Chow's rule). *Fixed*: deferred mails the small tier got wrong and the expert right; "
             "*broken*: the reverse. The sign test (two-sided, pooled over seeds) asks whether fixed and broken "
             "differ more than coin flips would; the seeds' test mails come from the same corpus, so pooling "
             "treats them as more independent than they are.", "", "## Summary over seeds", "",
             "| labels | expert | small | expert alone | cascade 10 % | cascade 20 % | cascade 30 % | change at 20 % "
             "(points) | per seed | fixed / broken | sign p | verdict |", "|---:|---|" + "---:|" * 9 + "---|"]
    for r in report["summary"]:
        c = r["cascade"]
        lines.append(f"| {r['labels']} | {r['expert']} | {r['small']:.3f} | {r['alone']:.3f} | {c['0.1']:.3f} | "
                     f"{c['0.2']:.3f} | {c['0.3']:.3f} | {r['change_points']:+.2f} | "
                     f"{' '.join(f'{v:+.1f}' for v in r['change_per_seed'])} | {r['fixed']} / {r['broken']} | "
                     f"{r['p']:.3f} | {verdict(r)} |")
    lines += ["", "## Conclusion", "", *conclusion(report["summary"]), "", "## Per label budget and seed", "",
              "| labels | seed | pool (spam) | small | small uncalibrated | perfect expert at 20 % | expert | alone | "
              "cascade 10 % | cascade 20 % | cascade 30 % | fixed | broken | seconds |",
              "|" + "---:|" * 6 + "---|" + "---:|" * 7]
    for run_ in report["runs"]:
        for name, e in run_["experts"].items():
            c = e["cascade"]
            lines.append(f"| {run_['labels']} | {run_['seed']} | {run_['pool']} ({run_['pool_spam']}) | "
                         f"{run_['small']['accuracy']:.3f} | {run_['small'].get('uncalibrated', float('nan')):.3f} | "
                         f"{run_['small']['oracle']:.3f} | {name} | "
                         f"{e['accuracy']:.3f} | {c['0.1']:.3f} | {c['0.2']:.3f} | {c['0.3']:.3f} | {e['fixed']} | "
                         f"{e['broken']} | {e['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200], help="label budgets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data seeds")
    parser.add_argument("--test", type=int, default=600, help="stratified test mails per seed")
    parser.add_argument("--finetune", action="store_true",
                        help=f"also fine-tune MiniLM ({FINETUNE_STEPS} steps; minutes)")
    parser.add_argument("--small", choices=["calibrated", "raw"], default="calibrated",
                        help="the small tier's calibrated probabilities (the harness's) or the raw detector's")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started, runs = time.perf_counter(), []
    with library_logs("bench_same_labels") as terminal:
        for labels in args.budgets:
            for seed in args.seeds:
                runs.append(run(labels, seed, args.test, args.finetune, args.small))
                accuracies = " ".join(f"{name} {e['cascade']['0.2']:.3f}" for name, e in runs[-1]["experts"].items())
                print(f"{labels} labels, seed {seed}: small {runs[-1]['small']['accuracy']:.3f}; cascade at 20 %: "
                      f"{accuracies} ({time.perf_counter() - started:.0f} s)", file=terminal, flush=True)
    report = {"config": str(CONFIG.relative_to(ROOT)), "small_tier": args.small, "budgets": args.budgets,
              "seeds": args.seeds, "test": args.test, "finetune": args.finetune, "rates": list(RATES),
              "seconds": time.perf_counter() - started, "runs": runs, "summary": summarise(runs)}
    write_results(args.out, "same_labels", report, markdown)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
