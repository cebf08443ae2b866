"""Does ``ray.serve.llm`` host the expert on this CPU-only machine, and how does it compare with the
expert replica's in-process vLLM ``AsyncLLM`` engine?

Starts Ray, tries ``ray.serve.llm.build_openai_app`` with a CPU ``LLMConfig`` for the expert model
(the tiny random Llama by default, or ``--model``). If it starts, two ``ExpertServer`` apps judge the
same SpamAssassin test mails (:func:`cascade.data.roles.load_roles`, test role) the same way:

* ``serve-llm``: ``expert.kind: openai`` talking to the ``ray.serve.llm`` app (label log-probs with
  ``allowed_token_ids``, as against any vLLM OpenAI server);
* ``asyncllm``: ``expert.kind: vllm``, the engine inside the replica (the app's default).

If it does not start, the error is recorded. Writes
``experiments/benchmarks/results/serve_llm.{json,md}``.

    python -m experiments.benchmarks.bench_serve_llm --batches 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.config import CascadeConfig
from cascade.logs import library_logs
from experiments.benchmarks.results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_ID = "expert-model"
MAX_MODEL_LEN = 512
BATCH = 8


def expert_config(model: str, **expert: Any) -> CascadeConfig:
    """SpamAssassin with a zero-shot expert on ``model`` (``expert`` overrides the kind and its reach)."""
    return CascadeConfig.model_validate({
        "dataset": {"name": "spamassassin"},
        "expert": {"kind": "vllm", "model": model, "shots": 0, "max_model_len": MAX_MODEL_LEN, "kv_cache_gib": 1.0,
                   "max_input_tokens": 256, "labels": ["ham", "spam"], **expert},
    })


def llm_config(model: str) -> Any:
    """``ray.serve.llm``'s config for ``model`` on CPU, with the engine settings the expert needs."""
    from ray.serve.llm import LLMConfig

    from cascade.experts.engines.vllm_local import vllm_env

    return LLMConfig(
        model_loading_config={"model_id": MODEL_ID, "model_source": model},
        accelerator_config={"kind": "cpu"},
        engine_kwargs={"max_model_len": MAX_MODEL_LEN, "logprobs_mode": "processed_logprobs", "max_logprobs": 20,
                       "enforce_eager": True, "dtype": "bfloat16"},
        deployment_config={"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
        runtime_env={"env_vars": vllm_env(1.0)},
    )


async def judge_load(handle: Any, texts: Sequence[str], batches: int, concurrency: int) -> dict[str, Any]:
    """``batches`` judge calls of ``BATCH`` mails, ``concurrency`` at a time; latency per call, mails/s."""
    from deployments.expert import ExpertHandle

    expert = ExpertHandle(handle)
    latencies: list[float] = []
    labels: list[int] = []
    calls = iter(range(batches))

    async def caller() -> None:
        for i in calls:
            started = time.perf_counter()
            result = await expert.ajudge([texts[(i * BATCH + j) % len(texts)] for j in range(BATCH)])
            latencies.append((time.perf_counter() - started) * 1000.0)
            labels.extend(np.asarray(result.probs).argmax(axis=1).tolist())

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"calls": batches, "samples_per_call": BATCH, "concurrency": concurrency, "seconds": elapsed,
            "samples_per_s": batches * BATCH / elapsed, "p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95)), "spam_share": float(np.mean(labels))}


def benchmark(model: str, batches: int) -> dict[str, Any]:
    import ray
    from ray import serve

    from cascade.data.roles import load_roles
    from deployments.app import init_ray
    from deployments.expert import ExpertServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    texts = [t[:2000] for t in list(load_roles(expert_config(model)).test.texts or [])[:BATCH * batches]]
    init_ray(num_cpus=os.cpu_count())
    result: dict[str, Any] = {"ray": ray.__version__, "model": Path(model).name, "cpus": os.cpu_count(),
                              "load_average_before": list(os.getloadavg())}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        from ray.serve.llm import build_openai_app

        started = time.perf_counter()
        try:
            # the ingress asks for a whole CPU by default; the LLMServer's bundle already takes 1.5 of 2
            serve.run(build_openai_app({"llm_configs": [llm_config(model)],
                                        "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0.1}}}),
                      name="llm", route_prefix="/llm")
        except Exception as exc:  # recorded: the point of this benchmark is whether it starts here
            result["serve_llm"] = {"started": False, "error": f"{type(exc).__name__}: {exc}"[:4000],
                                   "traceback": traceback.format_exc()[-4000:]}
            return result
        result["serve_llm"] = {"started": True, "startup_s": time.perf_counter() - started}
        experts = {
            "serve-llm": expert_config(model, kind="openai", base_url=f"http://127.0.0.1:{port}/llm",
                                       served_model_name=MODEL_ID, timeout_s=120.0),
            "asyncllm": expert_config(model),
        }
        for name, config in experts.items():
            if name == "asyncllm":
                serve.delete("llm")  # its idle engine would share the cores with this one
            options = {"ray_actor_options": {"num_cpus": 0.2, "runtime_env": {"env_vars": vllm_env_for(config)}}}
            started = time.perf_counter()
            handle = serve.run(ExpertServer.options(**options).bind(config), name=name, route_prefix=None)
            startup_s = time.perf_counter() - started
            asyncio.run(judge_load(handle, texts, 2, 1))  # warm-up
            result[name] = {"startup_s": startup_s,
                            "sequential": asyncio.run(judge_load(handle, texts, batches, 1)),
                            "concurrent_4": asyncio.run(judge_load(handle, texts, batches, 4))}
            serve.delete(name)
    finally:
        result["load_average_after"] = list(os.getloadavg())
        serve.shutdown()
        ray.shutdown()
    return result


def vllm_env_for(config: CascadeConfig) -> dict[str, str]:
    from deployments.expert import expert_env

    return expert_env(config)


def markdown(result: dict[str, Any]) -> str:
    llm = result["serve_llm"]
    lines = ["# `ray.serve.llm` as the expert's host (CPU)", "",
             f"Ray {result['ray']}, {result['cpus']} CPUs, model `{result['model']}`; load average "
             f"{result['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} after (the machine "
             "was shared with other jobs).", ""]
    if not llm["started"]:
        lines += ["`build_openai_app` with a CPU `LLMConfig` did **not** start here:", "", "```",
                  llm["error"], "```", ""]
    else:
        lines += [f"`build_openai_app` with a CPU `LLMConfig` started in {llm['startup_s']:.0f} s.", "",
                  f"Same mails, {BATCH} per judge call, through an `ExpertServer` replica either way:", "",
                  "| expert host | load | mails/s | p50 ms per call | p95 ms per call | spam share |",
                  "|---|---|---:|---:|---:|---:|"]
        for name in ("serve-llm", "asyncllm"):
            for load in ("sequential", "concurrent_4"):
                row = result[name][load]
                lines.append(f"| {name} | {load} | {row['samples_per_s']:.1f} | {row['p50_ms']:.0f} | "
                             f"{row['p95_ms']:.0f} | {row['spam_share']:.2f} |")
        lines.append("")
    lines += ["Reproduce: `python -m experiments.benchmarks.bench_serve_llm`.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="expert model folder (default: a tiny random Llama built now)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    model = args.model
    if model is None:
        from cascade.models import build_tiny_llama

        model = str(build_tiny_llama(Path(tempfile.mkdtemp(prefix="cascade-tiny-")) / "tiny-llama"))
    with library_logs("bench_serve_llm"):
        result = benchmark(model, args.batches)
    write_results(args.out, "serve_llm", result, markdown)
    print(markdown(result))


if __name__ == "__main__":
    main()
