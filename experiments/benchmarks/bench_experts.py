"""Large-tier benchmark: SmolLM2-135M-Instruct with the shipped SpamAssassin expert settings.

The mails are a stratified sample of the test part of ``experiments/configs/spamassassin.yaml``;
the prompt is that config's (``shots`` MiniLM-retrieved train mails, shot and query caps). Two
sections, each one heavy job, merged into ``experiments/benchmarks/results/experts.{json,md}``:

- ``experts``: AUROC, accuracy, samples/s and prompt tokens of the no-LLM control vote, SmolLM2 on
  transformers and on vLLM with the same prompts (throughput ratio, probability differences), and
  vLLM zero-shot; the fraction of this machine's measured matmul throughput (in bf16 and in the
  engine's dtype, ``expert.dtype`` resolved here) that vLLM's prefill reaches (prefill FLOPs ~
  2 x parameters x prompt tokens).
- ``modes``: vLLM samples/s and load time with ``enforce_eager`` and ``prefix_caching`` on and off.

    python -m experiments.benchmarks.bench_experts --section experts
    python -m experiments.benchmarks.bench_experts --section modes --samples 150
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cascade.config import CascadeConfig, ExpertConfig
from cascade.data.roles import load_roles
from cascade.experts import ExpertResult, LLMExpert, make_expert
from cascade.experts.dtype import resolve_dtype
from experiments.benchmarks.results_io import write_results
from policies.held_out import evaluation_index

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = ROOT / "experiments" / "configs" / "spamassassin.yaml"
WARMUP = 4


def timed_judge(expert: Any, texts: list[str]) -> tuple[ExpertResult, float]:
    """Judge after a short warm-up call; return the result and samples per second."""
    expert.judge(texts[:WARMUP])
    start = time.perf_counter()
    result = expert.judge(texts)
    return result, len(texts) / (time.perf_counter() - start)


def summary(result: ExpertResult, y: np.ndarray, samples_per_s: float) -> dict[str, Any]:
    return {"auroc": float(roc_auc_score(y, result.probs[:, 1])), "accuracy": float(np.mean(result.predictions == y)),
            "samples_per_s": samples_per_s, "mean_prompt_tokens": float(result.prompt_tokens.mean()),
            "truncated_rate": float(result.truncated.mean())}


def matmul_tflops(dtype: str = "bfloat16", size: int = 2048, repeats: int = 10) -> float:
    """Measured ``dtype`` matrix-multiply throughput of this CPU with torch on all its cores (TFLOP/s, best of
    ``repeats``; fewer when one multiply takes over a second, as bf16 does on a CPU without bf16 units)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    kind = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    best, spent = np.inf, 0.0
    for _ in range(repeats + 1):  # the first multiply warms up
        start = time.perf_counter()
        torch.matmul(a, b)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > 10:
            break
    return 2 * size**3 / best / 1e12


def parameter_count(model: str) -> tuple[int, int]:
    """(all parameters, parameters that prefill multiplies every prompt token by) of a Hugging Face folder's
    safetensors weights. The second leaves out the embedding table (a lookup) and the output head (vLLM
    computes logits for the last position only)."""
    from safetensors import safe_open

    from cascade.models import path

    total = per_token = 0
    for file in sorted(path(model).glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as weights:
            for name in weights.keys():
                size = int(np.prod(weights.get_slice(name).get_shape()))
                total += size
                per_token += 0 if ("embed_tokens" in name or name.startswith("lm_head")) else size
    return total, per_token


def sample(samples: int) -> tuple[CascadeConfig, Any, list[str], np.ndarray]:
    config = CascadeConfig.from_yaml(CONFIG)
    roles = load_roles(config)
    test = roles.test.subset(evaluation_index(roles.test, samples, config.experiment.seed))
    return config, roles.train, list(test.texts or []), test.y


def describe(config: CascadeConfig, pool: Any, y: np.ndarray) -> dict[str, Any]:
    e = config.expert
    return {"model": e.model, "dtype": resolve_dtype(e.dtype), "dtype_setting": e.dtype,
            "config": str(CONFIG.relative_to(ROOT)), "mails": len(y),
            "positive_rate": float(np.mean(y == 1)), "pool": len(pool), "shots": e.shots,
            "shot_max_tokens": e.shot_max_tokens, "max_input_tokens": e.max_input_tokens,
            "batch_size": e.batch_size or e.max_num_seqs,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}


def run_experts(samples: int) -> dict[str, Any]:
    config, pool, texts, y = sample(samples)
    peak = matmul_tflops("bfloat16")  # before any engine holds the cores
    engine_peak = matmul_tflops(resolve_dtype(config.expert.dtype))
    shipped = config.expert
    report = describe(config, pool, y)
    control_config = config.control_expert or ExpertConfig(kind="knn-vote", shots=shipped.shots)
    result, speed = timed_judge(make_expert(control_config, pool=pool), texts)
    report["control"] = summary(result, y, speed)
    print("control", report["control"], flush=True)

    with make_expert(shipped.model_copy(update={"kind": "transformers"}), pool=pool) as reference:
        start = time.perf_counter()
        reference.start()
        report["transformers_load_s"] = time.perf_counter() - start
        hf_result, speed = timed_judge(reference, texts)
        report["transformers_few_shot"] = summary(hf_result, y, speed)
    print("transformers", report["transformers_few_shot"], flush=True)

    with make_expert(shipped.model_copy(update={"kind": "vllm"}), pool=pool) as few_shot:
        start = time.perf_counter()
        few_shot.start()
        report["vllm_load_s"] = time.perf_counter() - start
        vllm_result, speed = timed_judge(few_shot, texts)
        report["vllm_few_shot"] = summary(vllm_result, y, speed)
        if not np.array_equal(vllm_result.prompt_tokens, hf_result.prompt_tokens):
            raise RuntimeError("vLLM and transformers were given different prompts")
        difference = np.abs(vllm_result.probs[:, 1] - hf_result.probs[:, 1])
        report["vllm_vs_transformers"] = {
            "speedup": report["vllm_few_shot"]["samples_per_s"] / report["transformers_few_shot"]["samples_per_s"],
            "max_abs_prob_diff": float(difference.max()), "mean_abs_prob_diff": float(difference.mean()),
        }
        print("vllm few-shot", report["vllm_few_shot"], report["vllm_vs_transformers"], flush=True)
        zero_shot = LLMExpert(few_shot.engine, few_shot.encoder.tokenizer, few_shot.label_names,
                              max_input_tokens=shipped.max_input_tokens, max_model_len=shipped.max_model_len)
        result, speed = timed_judge(zero_shot, texts)
        report["vllm_zero_shot"] = summary(result, y, speed)
        print("vllm zero-shot", report["vllm_zero_shot"], flush=True)
    params, per_token = parameter_count(shipped.model)
    peak = max(peak, matmul_tflops("bfloat16"))  # again with the engines gone: the better of the two is the reference
    engine_peak = max(engine_peak, matmul_tflops(resolve_dtype(config.expert.dtype)))
    prefill = (2 * per_token * report["vllm_few_shot"]["mean_prompt_tokens"]
               * report["vllm_few_shot"]["samples_per_s"])
    report["prefill"] = {"parameters": params, "prefill_parameters": per_token, "matmul_bf16_tflops": peak,
                         "prefill_tflops": prefill / 1e12,
                         "fraction_of_matmul": prefill / 1e12 / peak, "matmul_engine_dtype_tflops": engine_peak,
                         "fraction_of_engine_dtype_matmul": prefill / 1e12 / engine_peak}
    print("prefill", report["prefill"], flush=True)
    return report


def run_modes(samples: int) -> dict[str, Any]:
    """vLLM samples/s on the shipped prompts with eager mode and prefix caching on and off."""
    config, pool, texts, y = sample(samples)
    rows = []
    for eager in (True, False):
        for prefix in (True, False):
            start = time.perf_counter()
            expert_config = config.expert.model_copy(update={"kind": "vllm", "enforce_eager": eager,
                                                             "prefix_caching": prefix})
            try:
                with make_expert(expert_config, pool=pool) as expert:
                    expert.start()
                    load_s = time.perf_counter() - start
                    result, speed = timed_judge(expert, texts)
            except Exception as exc:  # a mode this vLLM build cannot run on this machine is a result too
                rows.append({"enforce_eager": eager, "prefix_caching": prefix, "error": f"{type(exc).__name__}: {exc}"})
            else:
                rows.append({"enforce_eager": eager, "prefix_caching": prefix, "load_s": load_s,
                             **summary(result, y, speed)})
            print(rows[-1], flush=True)
    prompt = {"shots": config.expert.shots, "shot_max_tokens": config.expert.shot_max_tokens,
              "max_input_tokens": config.expert.max_input_tokens}
    return {"modes": {"mails": len(texts), "rows": rows, "load_average": round(os.getloadavg()[0], 2),
                      "prompt": prompt}}


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Large-tier benchmark (`experiments/benchmarks/bench_experts.py`)", ""]
    if "control" in report:
        lines += experts_lines(report)
    if "modes" in report:
        lines += modes_lines(report["modes"])
    return "\n".join(lines) + "\n"


def experts_lines(report: dict[str, Any]) -> list[str]:
    rows = [
        ("control: vote of retrieved labels (no LLM)", report["control"]),
        (f"SmolLM2 {report['shots']}-shot, transformers", report["transformers_few_shot"]),
        (f"SmolLM2 {report['shots']}-shot, vLLM", report["vllm_few_shot"]),
        ("SmolLM2 zero-shot, vLLM", report["vllm_zero_shot"]),
    ]
    lines = [
        f"{report['model']} ({report['dtype']}) on {report['mails']} test mails of `{report['config']}` (stratified, "
        f"spam rate {report['positive_rate']:.1%}) with its prompt: {report['shots']} MiniLM-retrieved train mails "
        f"(of {report['pool']}) cut to {report['shot_max_tokens']} tokens, the mail cut to "
        f"{report['max_input_tokens']}. Machine: {report['machine']['cpus']} CPU cores (load average "
        f"{report.get('load_average', 'n/a')} at the end), no GPU.", "",
        "| expert | AUROC | accuracy | samples/s | mean prompt tokens | truncated |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {r['auroc']:.3f} | {r['accuracy']:.3f} | {_rate(r['samples_per_s'])} | "
              f"{r['mean_prompt_tokens']:.0f} | {r['truncated_rate']:.0%} |" for name, r in rows]
    comparison, prefill = report["vllm_vs_transformers"], report["prefill"]
    gain = report["vllm_few_shot"]["auroc"] - report["control"]["auroc"]
    verdict = f"yes, +{gain:.3f}" if gain > 0 else f"no, {gain:+.3f}; here the LLM only echoes its examples"
    return lines + [
        "",
        f"- Load time: vLLM engine {report['vllm_load_s']:.1f} s, transformers {report['transformers_load_s']:.1f} s.",
        f"- Throughput on the same {report['shots']}-shot prompts: vLLM batched / transformers (batches of "
        f"{report['batch_size']}) = **{comparison['speedup']:.2f}x**.",
        f"- Same prompts, same scores: spam probability differs by {comparison['mean_abs_prob_diff']:.1e} on average "
        f"(max {comparison['max_abs_prob_diff']:.1e}) between vLLM and transformers (their kernels differ).",
        f"- Prefill: 2 × {prefill.get('prefill_parameters', prefill['parameters']) / 1e6:.0f} M parameters (of "
        f"{prefill['parameters'] / 1e6:.0f} M: the embedding table is a lookup and logits are computed for the last "
        f"position only; attention FLOPs left out) × prompt tokens/s = {prefill['prefill_tflops'] * 1e3:.1f} GFLOP/s: "
        f"**{prefill['fraction_of_engine_dtype_matmul']:.0%}** of the {prefill['matmul_engine_dtype_tflops'] * 1e3:.0f} "
        f"GFLOP/s a 2048² torch matmul reaches on all cores in the engine's dtype ({report['dtype']}); "
        + (f"{prefill['fraction_of_matmul']:.0%} of the {prefill['matmul_bf16_tflops'] * 1e3:.0f} GFLOP/s of a bf16 "
           "matmul" if prefill["fraction_of_matmul"] <= 1 else
           f"a bf16 matmul reaches only {prefill['matmul_bf16_tflops'] * 1e3:.1f} GFLOP/s here (no bf16 units)")
        + " (best multiply, measured before and after the engines ran; the better is kept).",
        f"- Does the LLM add anything beyond its examples? {report['shots']}-shot SmolLM2 AUROC "
        f"{report['vllm_few_shot']['auroc']:.3f} vs {report['control']['auroc']:.3f} for the plain vote of the same "
        f"retrieved labels: {verdict}.",
        "- Samples/s exclude a short warm-up call; each is one batched `judge` over all mails. The control's rate "
        "uses cached MiniLM embeddings of the mails.",
        f"- Section run time: {report['wall_s'] / 60:.1f} min.", "",
    ]


def _rate(samples_per_s: float) -> str:
    return f"{samples_per_s:.2f}" if samples_per_s < 100 else f"{samples_per_s:,.0f}"


def modes_lines(modes: dict[str, Any]) -> list[str]:
    ran = [r for r in modes["rows"] if "error" not in r]
    prompt = modes.get("prompt")
    which = ("the same prompts in every mode: unrecorded" if prompt is None else
             f"the same prompts in every mode: {prompt['shots']} shots cut to {prompt['shot_max_tokens']} tokens, "
             f"the mail to {prompt['max_input_tokens']}")
    lines = [f"## vLLM engine modes on CPU ({modes['mails']} mails, {which}; load average "
             f"{modes['load_average']} at the end)", "",
             "| enforce_eager | prefix_caching | load s | samples/s | AUROC |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['enforce_eager']} | {r['prefix_caching']} | {r['load_s']:.0f} | {r['samples_per_s']:.2f} | "
              f"{r['auroc']:.3f} |" if "error" not in r else
              f"| {r['enforce_eager']} | {r['prefix_caching']} | failed: {r['error'][:120]} | | |" for r in modes["rows"]]
    if not ran:
        return lines + ["", "No mode ran.", ""]
    fastest = max(ran, key=lambda r: r["samples_per_s"])
    lines += ["", f"Fastest per sample: enforce_eager={fastest['enforce_eager']}, "
                  f"prefix_caching={fastest['prefix_caching']}. One run per mode: differences of a few percent are "
                  f"within run-to-run noise."]
    for prefix in (True, False):
        eager = [r for r in ran if r["enforce_eager"] and r["prefix_caching"] == prefix]
        compiled = [r for r in ran if not r["enforce_eager"] and r["prefix_caching"] == prefix]
        if eager and compiled:
            e, c = eager[0], compiled[0]
            saving = 1 / e["samples_per_s"] - 1 / c["samples_per_s"]
            extra = c["load_s"] - e["load_s"]
            paid = f"after {extra / saving:,.0f} samples" if saving > 0 else "never"
            lines.append(f"- prefix_caching={prefix}: compiled mode loads {extra:.0f} s slower and pays that back "
                         f"{paid} (start to last answer).")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=["experts", "modes"], required=True)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    section = run_experts(args.samples) if args.section == "experts" else run_modes(args.samples)
    section["wall_s" if args.section == "experts" else "modes_wall_s"] = time.perf_counter() - start
    if args.section == "experts":
        section["load_average"] = round(os.getloadavg()[0], 2)
    earlier = args.out / "experts.json"
    kept = json.loads(earlier.read_text()) if earlier.is_file() else {}
    if args.section == "experts" or "transformers_few_shot" not in kept:  # keep only this version's sections
        kept = {key: kept[key] for key in ("modes", "modes_wall_s") if key in kept}
    report = {**kept, **section}
    write_results(args.out, "experts", report, markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
