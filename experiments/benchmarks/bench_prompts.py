"""Prompt-size grid: AUROC vs mean prompt tokens of SmolLM2 on vLLM over shots x shot cap x query cap.

Scores the test mails of ``experiments/configs/spamassassin.yaml`` (the experiment's 600 test
mails; shots retrieved by MiniLM from its train split) with one vLLM engine for the whole grid,
each grid point one batched call over all mails. ``--baseline COMMIT`` also scores the same mails
with the expert of an older commit (its own prompt and label scoring, run from ``git archive``
in a subprocess), the reference a compact prompt must match. Writes
``experiments/benchmarks/results/prompts.{json,md}``.

    flock /tmp/cascade-heavy.lock python -m experiments.benchmarks.bench_prompts \\
        --grid 2x32x96 4x32x64 --baseline bfbc707
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
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cascade.config import CascadeConfig
from cascade.data.roles import load_roles
from cascade.experts import LLMExpert, NeighbourRetriever, make_expert
from experiments.held_out import evaluation_index

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
                             calibration_fraction=d.calibration_fraction)["train"]
    with make_expert(config.expert.model_copy(update={"kind": request["kind"]}), pool=train) as expert:
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
            "max_prompt_tokens": int(prompt_tokens.max()), "samples_per_s": float(len(y) / wall_s), "wall_s": wall_s}


def run(grid: list[str], mails: int | None, baseline: str | None, kind: str = "vllm") -> dict[str, Any]:
    config = CascadeConfig.from_yaml(CONFIG)
    roles = load_roles(config)
    test = roles.test.subset(evaluation_index(roles.test, mails or config.experiment.test_samples,
                                              config.experiment.seed))
    texts, y = list(test.texts or []), test.y
    points = [grid_point(spec) for spec in grid]
    retrievers = {k: NeighbourRetriever(roles.train, k=k) for k in sorted({p[0] for p in points if p[0]})}
    expert_config = config.expert.model_copy(update={"shots": 0, "kind": kind})
    report: dict[str, Any] = {"config": str(CONFIG.relative_to(ROOT)), "model": config.expert.model, "engine": kind,
                              "mails": len(texts), "spam_rate": float(np.mean(y)), "cpus": os.cpu_count(),
                              "rows": []}
    with make_expert(expert_config) as zero:
        assert isinstance(zero, LLMExpert)
        start = time.perf_counter()
        zero.start()
        report["engine_load_s"] = time.perf_counter() - start
        zero.judge(texts[:4])  # warm-up
        print(time.strftime("%H:%M:%S"), f"engine up in {report['engine_load_s']:.0f} s", flush=True)
        for shots, shot_cap, query_cap in points:
            expert = LLMExpert(zero.engine, zero.encoder.tokenizer, zero.label_names, shots=shots,
                               retriever=retrievers.get(shots), max_input_tokens=query_cap,
                               shot_max_tokens=max(shot_cap, 1), max_model_len=config.expert.max_model_len)
            start = time.perf_counter()
            result = expert.judge(texts)
            name = f"{shots} shots x {shot_cap} tok, query {query_cap} tok"
            report["rows"].append({**row(name, result.probs, result.prompt_tokens, y, time.perf_counter() - start),
                                   "shots": shots, "shot_max_tokens": shot_cap, "max_input_tokens": query_cap})
            print(time.strftime("%H:%M:%S"), report["rows"][-1], flush=True)
    if baseline:
        report["baseline"] = {"commit": baseline, **run_baseline(baseline, texts, y, kind)}
        print(report["baseline"], flush=True)
    return report


def run_baseline(commit: str, texts: list[str], y: np.ndarray, kind: str) -> dict[str, Any]:
    """The shipped config's expert as of ``commit`` on the same mails, in a subprocess on that code."""
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "cascade", "experiments/configs"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        request = Path(folder) / "request.json"
        request.write_text(json.dumps({"config": str(tree / "experiments/configs/spamassassin.yaml"), "texts": texts,
                                       "kind": kind}))
        script = Path(folder) / "baseline.py"
        script.write_text(_BASELINE)
        out = Path(folder) / "out.npz"
        subprocess.run([sys.executable, str(script), str(request), str(out)], check=True,
                       env={**os.environ, "PYTHONPATH": str(tree)}, cwd=folder)
        saved = np.load(out)
        return row(f"shipped 4-shot prompt at {commit}", saved["probs"], saved["prompt_tokens"], y,
                   float(saved["wall_s"]))


def markdown(report: dict[str, Any]) -> str:
    rows = sorted(report["rows"], key=lambda r: r["mean_prompt_tokens"])
    if "baseline" in report:
        rows.append(report["baseline"])
    lines = [
        "# Prompt size vs AUROC (`experiments/benchmarks/bench_prompts.py`)", "",
        f"{report['model']} ({report['engine']} engine, bf16, CPU), {report['mails']} test mails of `{report['config']}` "
        f"(spam rate {report['spam_rate']:.1%}), shots retrieved by MiniLM from its train split; one engine "
        f"(loaded in {report['engine_load_s']:.0f} s), each row one batched call over all mails on "
        f"{report['cpus']} shared CPU cores.", "",
        "| prompt | AUROC | accuracy | mean prompt tokens | max | samples/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['prompt']} | {r['auroc']:.3f} | {r['accuracy']:.3f} | {r['mean_prompt_tokens']:.0f} | "
              f"{r['max_prompt_tokens']} | {r['samples_per_s']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="+", default=["0x0x96", "2x32x96", "4x32x64"],
                        help="grid points SHOTSxSHOT_CAPxQUERY_CAP")
    parser.add_argument("--mails", type=int, default=None, help="default: the config's test_samples")
    parser.add_argument("--baseline", default=None, help="also score with the expert of this git commit")
    parser.add_argument("--kind", default="vllm", choices=["vllm", "transformers"], help="engine for every row")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = run(args.grid, args.mails, args.baseline, args.kind)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompts.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "prompts.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
