"""Prompt-size grid: AUROC vs mean prompt tokens of SmolLM2 on vLLM over shots x shot cap x query cap.

Scores the test mails of ``experiments/configs/spamassassin.yaml`` (the experiment's 600 test
mails; shots retrieved by MiniLM from its train split) with one vLLM engine for the whole grid,
each grid point one batched call over all mails. ``--baseline COMMIT`` also scores the same mails
with the expert of an older commit (its own prompt and label scoring, run from ``git archive``
in a subprocess), the reference a compact prompt must match. Writes
``experiments/benchmarks/results/prompts.{json,md}`` with every row's per-mail spam probability, and
a paired bootstrap interval of AUROC(``--default``) - AUROC(baseline) over the same mails.
Each row also says what the prompt does inside the cascade: the accuracy on the same mails when
the config's small tier answers and its least confident 10 % / 20 % go to the expert (the
confidence policy at a fixed rate). A prompt that ranks better can still be worse there: a model
biased to one label answers the deferred mails worse at its 0.5 threshold. ``--render`` recomputes
those columns and the comparison from the saved report without scoring anything.
``--merge`` keeps the rows of an earlier report on the same mails, so the grid and the baseline can
run as two shorter jobs:

    python -m experiments.benchmarks.bench_prompts                # the recorded grid (GRID)
    python -m experiments.benchmarks.bench_prompts \\
        --grid --baseline bfbc707 --merge

On a slow machine ``--part I/N`` scores only every N-th mail from the I-th on (grid and
baseline alike) into ``prompts-partIofN.json``; ``--combine N`` joins the parts present into
``prompts.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cascade.config import CascadeConfig
from cascade.data.roles import load_roles
from cascade.experts import LLMExpert, NeighbourRetriever, make_expert
from cascade.experts.dtype import resolve_dtype
from cascade.scoring import score_small
from experiments.benchmarks.results_io import write_results
from policies.held_out import evaluation_index

CASCADE_RATES = (0.1, 0.2)
GRID = ["6x8x48", "5x12x60", "4x20x64", "4x24x48", "4x32x64", "3x28x80", "2x32x96", "2x44x96", "1x56x150"]
"""the recorded grid (prompts.md): shots x shot cap x query cap, all but one at <= 300 prompt tokens"""

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = ROOT / "experiments" / "configs" / "spamassassin.yaml"
_BASELINE = """
import json, sys, time
import numpy as np
from cascade.config import CascadeConfig
from cascade.experts import make_expert
from cascade import data
if __name__ == "__main__":
    request = json.load(open(sys.argv[1]))
    config = CascadeConfig.from_yaml(request["config"])
    d = config.dataset
    train = data.load_splits(d.name, seed=config.experiment.seed, train_fraction=d.train_fraction,
                             calibration_fraction=d.held_out_fraction)["train"]
    update = {"kind": request["kind"], "dtype": request["dtype"]}
    with make_expert(config.expert.model_copy(update=update), pool=train) as expert:
        expert.judge(request["texts"][:4])
        start = time.perf_counter()
        result = expert.judge(request["texts"])
        elapsed = time.perf_counter() - start
    np.savez(sys.argv[2], probs=result.probs, prompt_tokens=result.prompt_tokens, wall_s=elapsed)
"""


def grid_point(spec: str) -> tuple[int, int, int]:
    """``"4x32x96"`` -> (shots, shot cap, query cap)."""
    shots, shot_cap, query_cap = (int(part) for part in spec.split("x"))
    return shots, shot_cap, query_cap


def row(name: str, probs: np.ndarray, prompt_tokens: np.ndarray, y: np.ndarray, wall_s: float) -> dict[str, Any]:
    return {"prompt": name, "auroc": float(roc_auc_score(y, probs[:, 1])),
            "accuracy": float(np.mean(probs.argmax(1) == y)), "mean_prompt_tokens": float(prompt_tokens.mean()),
            "max_prompt_tokens": int(prompt_tokens.max()), "samples_per_s": float(len(y) / wall_s), "wall_s": wall_s,
            "spam_prob": [round(float(p), 6) for p in probs[:, 1]], "prompt_tokens": [int(t) for t in prompt_tokens]}


def paired_auroc_difference(y: np.ndarray, new: np.ndarray, old: np.ndarray, resamples: int = 2000,
                            seed: int = 0) -> dict[str, float]:
    """AUROC(new) - AUROC(old) on the same samples, with a 95 % paired bootstrap percentile interval."""
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        index = rng.integers(0, len(y), len(y))
        if np.ptp(y[index]) == 0:
            continue
        differences.append(roc_auc_score(y[index], new[index]) - roc_auc_score(y[index], old[index]))
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"difference": float(roc_auc_score(y, new) - roc_auc_score(y, old)), "ci_low": float(low),
            "ci_high": float(high), "resamples": len(differences)}


def run(grid: list[str], mails: int | None, baseline: str | None, kind: str = "vllm",
        save: Callable[[dict[str, Any]], None] = lambda report: None, part: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """Score the grid and the baseline; ``save`` gets the report after each row (a killed job keeps them)."""
    config = CascadeConfig.from_yaml(CONFIG)
    roles = load_roles(config)
    index, parts = part
    test = test_mails(config, roles, mails, part)
    texts, y = list(test.texts or []), test.y
    points = [grid_point(spec) for spec in grid]
    retrievers = {k: NeighbourRetriever(roles.train, k=k) for k in sorted({p[0] for p in points if p[0]})}
    dtype = resolve_dtype(config.expert.dtype)
    expert_config = config.expert.model_copy(update={"shots": 0, "kind": kind, "dtype": dtype})
    report: dict[str, Any] = {"config": str(CONFIG.relative_to(ROOT)), "model": config.expert.model, "engine": kind,
                              "dtype": dtype,
                              "mails": len(texts), "spam_rate": float(np.mean(y)), "cpus": os.cpu_count(),
                              "mail_ids": [str(i) for i in test.ids], "labels": [int(v) for v in y], "rows": [],
                              "part": f"{index}/{parts}", "small": small_tier_outputs(config, roles, test)}
    if points:
        run_grid(points, texts, y, expert_config, retrievers, config.expert.max_model_len, report, save)
    if baseline:
        report["baseline"] = {"commit": baseline, **run_baseline(baseline, texts, y, kind, dtype)}
        save(report)
    return report


def test_mails(config: CascadeConfig, roles: Any, mails: int | None, part: tuple[int, int] = (1, 1)) -> Any:
    """The experiment's stratified test sample (``mails`` of them, default its ``max_scored_per_split``), or the
    ``part`` = (I, N) of it: every N-th mail from the I-th on (the sample is sorted by group)."""
    test = roles.test.subset(evaluation_index(roles.test, mails or config.experiment.max_scored_per_split,
                                              config.experiment.seed))
    index, parts = part
    return test.subset(np.arange(len(test))[index - 1::parts])


def default_point(config: CascadeConfig) -> tuple[int, int, int]:
    """The shipped config's grid point (shots, shot cap, query cap): what ``--default`` compares by default."""
    return config.expert.shots, config.expert.shot_max_tokens, config.expert.max_input_tokens


def small_tier_outputs(config: CascadeConfig, roles: Any, test: Any) -> dict[str, list[float]]:
    """The config's small tier (fitted or read from the experiment's cache) on the same mails: its answer
    and its confidence, what the cascade columns defer on."""
    from cascade.small import fit_small_tier

    small, _ = fit_small_tier(config, roles)
    probs = score_small(small, test, 0.0).probs
    return {"pred": [int(v) for v in probs.argmax(1)], "confidence": [round(float(v), 6) for v in probs.max(1)]}


def cascade_accuracy(report: dict[str, Any], spam_prob: list[float], rate: float) -> float:
    """Accuracy on the report's mails when the small tier's least confident ``rate`` go to this prompt's answer."""
    y = np.asarray(report["labels"])
    pred = np.asarray(report["small"]["pred"]).copy()
    deferred = np.argsort(np.asarray(report["small"]["confidence"]), kind="stable")[: int(round(rate * len(y)))]
    pred[deferred] = (np.asarray(spam_prob)[deferred] >= 0.5).astype(int)
    return float(np.mean(pred == y))


def run_grid(points: list[tuple[int, int, int]], texts: list[str], y: np.ndarray, expert_config: Any,
             retrievers: dict[int, NeighbourRetriever], max_model_len: int, out: dict[str, Any],
             save: Callable[[dict[str, Any]], None]) -> None:
    """Every grid point on ``texts`` with one engine: its load time and one row per point, added to ``out``."""
    with make_expert(expert_config) as zero:
        assert isinstance(zero, LLMExpert)
        start = time.perf_counter()
        zero.start()
        out["engine_load_s"] = time.perf_counter() - start
        zero.judge(texts[:4])  # warm-up
        print(time.strftime("%H:%M:%S"), f"engine up in {out['engine_load_s']:.0f} s", flush=True)
        for shots, shot_cap, query_cap in points:
            expert = LLMExpert(zero.engine, zero.encoder.tokenizer, zero.label_names, shots=shots,
                               retriever=retrievers.get(shots), max_input_tokens=query_cap,
                               shot_max_tokens=max(shot_cap, 1), max_model_len=max_model_len)
            start = time.perf_counter()
            result = expert.judge(texts)
            name = f"{shots} shots x {shot_cap} tok, query {query_cap} tok"
            out["rows"].append({**row(name, result.probs, result.prompt_tokens, y, time.perf_counter() - start),
                                "shots": shots, "shot_max_tokens": shot_cap, "max_input_tokens": query_cap})
            print(time.strftime("%H:%M:%S"), {k: v for k, v in out["rows"][-1].items() if k != "spam_prob"},
                  flush=True)
            save(out)


def merge(report: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """``report`` plus the rows (and baseline parts) of ``earlier`` it lacks; both must cover the same mails."""
    if (earlier.get("mail_ids") != report["mail_ids"] or earlier.get("engine") != report["engine"]
            or earlier.get("dtype", "bfloat16") != report["dtype"]):
        raise SystemExit("--merge: the earlier report scored other mails, another engine or dtype; run the grid again")
    merged = {**earlier, **{k: v for k, v in report.items() if k != "rows"}}
    names = {r["prompt"] for r in report["rows"]}
    merged["rows"] = [r for r in earlier.get("rows", []) if r["prompt"] not in names] + report["rows"]
    return merged


def compare(report: dict[str, Any], default: tuple[int, int, int]) -> dict[str, Any] | None:
    """The paired AUROC difference default grid point - baseline, when both were scored."""
    rows = [r for r in report.get("rows", []) if (r["shots"], r["shot_max_tokens"], r["max_input_tokens"]) == default]
    if not rows or not report.get("baseline"):
        return None
    y = np.asarray(report["labels"])
    return {"default": rows[0]["prompt"], "baseline": report["baseline"]["prompt"],
            **paired_auroc_difference(y, np.asarray(rows[0]["spam_prob"]), np.asarray(report["baseline"]["spam_prob"]))}


def run_baseline(commit: str, texts: list[str], y: np.ndarray, kind: str = "vllm",
                 dtype: str = "float32") -> dict[str, Any]:
    """The shipped config's expert as of ``commit`` on the same mails, in a subprocess on that code, computing
    in ``dtype`` (the grid's, so the two compare like with like)."""
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "cascade", "experiments/configs"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        request = Path(folder) / "request.json"
        request.write_text(json.dumps({"config": str(tree / "experiments/configs/spamassassin.yaml"), "texts": texts,
                                       "kind": kind, "dtype": dtype}))
        script = Path(folder) / "baseline.py"
        script.write_text(_BASELINE)
        out = Path(folder) / "out.npz"
        subprocess.run([sys.executable, str(script), str(request), str(out)], check=True,
                       env={**os.environ, "PYTHONPATH": str(tree)}, cwd=folder)
        saved = np.load(out)
        print(time.strftime("%H:%M:%S"), f"baseline: {len(texts)} mails in {float(saved['wall_s']):.0f} s", flush=True)
        return row(f"shipped 4-shot prompt at {commit}", saved["probs"], saved["prompt_tokens"], y,
                   float(saved["wall_s"]))


def markdown(report: dict[str, Any]) -> str:
    rows = sorted(report["rows"], key=lambda r: r["mean_prompt_tokens"])
    if report.get("baseline"):
        rows.append(report["baseline"])
    lines = [
        "# Prompt size vs AUROC (`experiments/benchmarks/bench_prompts.py`)", "",
        f"{report['model']} ({report['engine']} engine, {report.get('dtype', 'bfloat16')}, CPU), {report['mails']} test mails of `{report['config']}` "
        f"(part {report.get('part', '1/1')} of its stratified test sample) "
        f"(spam rate {report['spam_rate']:.1%}), shots retrieved by MiniLM from its train split; one engine "
        f"(loaded in {report.get('engine_load_s', float('nan')):.0f} s), each row one batched call over all mails on "
        f"{report['cpus']} CPU cores (load average {report.get('load_average', 'n/a')} at the end).", "",
        "| prompt | AUROC | accuracy | ham called spam | spam called ham | mean prompt tokens | max | samples/s"
        + "".join(f" | cascade, {rate:.0%} deferred" for rate in CASCADE_RATES if "small" in report) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(CASCADE_RATES) if "small" in report else 0),
    ]
    y = np.asarray(report["labels"])
    for r in rows:
        answer = np.asarray(r["spam_prob"]) >= 0.5
        cascade = "".join(f" | {cascade_accuracy(report, r['spam_prob'], rate):.3f}" for rate in CASCADE_RATES
                          if "small" in report)
        lines.append(f"| {r['prompt']} | {r['auroc']:.3f} | {r['accuracy']:.3f} | {int(np.sum(answer & (y == 0)))} | "
                     f"{int(np.sum(~answer & (y == 1)))} | {r['mean_prompt_tokens']:.0f} | {r['max_prompt_tokens']} | "
                     f"{r['samples_per_s']:.2f}{cascade} |")
    if "small" in report:
        small_accuracy = float(np.mean(np.asarray(report["small"]["pred"]) == y))
        lines += ["", f"Cascade columns: the config's small tier (accuracy {small_accuracy:.3f} alone on these mails) "
                      "answers, its least confident mails go to the row's prompt (spam when P(spam) >= 0.5)."]
    if report.get("comparison"):
        c = report["comparison"]
        lines += ["", f"Paired bootstrap ({c['resamples']} resamples of the same mails): AUROC({c['default']}) − "
                      f"AUROC({c['baseline']}) = **{c['difference']:+.3f}** (95% CI {c['ci_low']:+.3f} to "
                      f"{c['ci_high']:+.3f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="*", default=GRID,
                        help="grid points SHOTSxSHOT_CAPxQUERY_CAP (none: only the baseline)")
    parser.add_argument("--default", type=grid_point, default=None,
                        help="the grid point compared with the baseline (default: the config's expert)")
    parser.add_argument("--render", action="store_true",
                        help="recompute the small tier, the cascade columns and the comparison; score nothing")
    parser.add_argument("--merge", action="store_true", help="keep the rows of the earlier report in --out")
    parser.add_argument("--part", default="1/1", help="I/N: score only the I-th of N equal parts of the mails")
    parser.add_argument("--combine", type=int, default=None, help="join the N-part files present; score nothing")
    parser.add_argument("--mails", type=int, default=None, help="default: the config's max_scored_per_split")
    parser.add_argument("--baseline", default=None, help="also score with the expert of this git commit")
    parser.add_argument("--kind", default="vllm", choices=["vllm", "transformers"], help="engine for every row")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.default = args.default or default_point(CascadeConfig.from_yaml(CONFIG))
    if args.combine:
        report = combine([json.loads(f.read_text()) for f in sorted(args.out.glob(f"prompts-part*of{args.combine}.json"))])
        report["comparison"] = compare(report, args.default)
        write_results(args.out, "prompts", report, markdown)
        print(markdown(report))
        return
    if args.render:
        target = args.out / "prompts.json"
        report = json.loads(target.read_text())
        config = CascadeConfig.from_yaml(CONFIG)
        roles = load_roles(config)
        test = test_mails(config, roles, report["mails"])
        if [str(i) for i in test.ids] != report["mail_ids"]:
            raise SystemExit("--render: the saved report scored other mails than the config's test sample")
        report["small"] = small_tier_outputs(config, roles, test)
        report["comparison"] = compare(report, args.default)
        write_results(args.out, "prompts", report, markdown)
        print(markdown(report))
        return
    index, parts = (int(v) for v in args.part.split("/"))
    name = "prompts" if parts == 1 else f"prompts-part{index}of{parts}"
    target = args.out / f"{name}.json"
    kept = json.loads(target.read_text()) if args.merge and target.exists() else None

    def save(report: dict[str, Any]) -> dict[str, Any]:
        report = {**report, "load_average": round(os.getloadavg()[0], 2)}
        if kept is not None:
            report = merge(report, kept)
        report["comparison"] = compare(report, args.default)
        write_results(args.out, name, report, markdown)
        return report

    print(markdown(save(run(args.grid, args.mails, args.baseline, args.kind, save, (index, parts)))))


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report over the mails of ``parts``: each row (and the baseline) joined over the parts that all have it."""
    if not parts:
        raise SystemExit("--combine: no part files in --out")
    ordered = sorted(parts, key=lambda r: int(r["part"].split("/")[0]))
    y = np.concatenate([r["labels"] for r in ordered])

    def joined(rows: list[dict[str, Any]]) -> dict[str, Any]:
        probs = np.concatenate([r["spam_prob"] for r in rows])
        tokens = np.concatenate([r["prompt_tokens"] for r in rows])
        extra = {k: rows[0][k] for k in ("shots", "shot_max_tokens", "max_input_tokens", "commit") if k in rows[0]}
        return {**row(rows[0]["prompt"], np.c_[1 - probs, probs], tokens, y, sum(r["wall_s"] for r in rows)), **extra}

    names = set.intersection(*({r["prompt"] for r in p["rows"]} for p in ordered))
    report = {**ordered[-1], "mail_ids": sum((r["mail_ids"] for r in ordered), []), "labels": y.tolist(),
              "mails": len(y), "spam_rate": float(np.mean(y)), "part": ", ".join(r["part"] for r in ordered),
              "engine_load_s": float(np.mean([r.get("engine_load_s", np.nan) for r in ordered])),
              "rows": [joined([next(r for r in p["rows"] if r["prompt"] == name) for p in ordered])
                       for name in sorted(names)]}
    report["baseline"] = joined([p["baseline"] for p in ordered]) if all(p.get("baseline") for p in ordered) else None
    report.pop("small", None)
    if all("small" in p for p in ordered):
        report["small"] = {key: sum((p["small"][key] for p in ordered), []) for key in ("pred", "confidence")}
    return report


if __name__ == "__main__":
    main()
