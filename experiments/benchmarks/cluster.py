"""Multi-node test: the cascade app on a real two-node Ray cluster, the expert's node killed under load.

Starts a Ray cluster of separate nodes on this machine, each a ``ray start --block`` process in its own
session with its own ``--temp-dir`` and ports (so it never meets another Ray instance here): a head
offering the custom resource ``head_node`` and a worker offering ``expert_node``. The app is deployed from
a driver attached to the head, with ``serve.resources`` pinning the expert to ``expert_node`` and the two
router replicas and the budget holder to ``head_node``; Serve's proxy runs on the head only (two proxies
on one host would want the same port). The expert is the no-LLM knn-vote (``tests/serving.py``'s
cascade), tuned into a temporary folder.

Then, under load (closed-loop clients, one mail per request, 3 the rule keeps : 1 it defers, counting
every answer), the worker node is killed: SIGKILL to every process of that node (its ``ray start``,
raylet, agents and replica workers; the processes of its session and their descendants), as a machine
that loses power. Load goes on while the expert is gone; then the worker node is started again
(a new node id) and load goes on until the expert answers again and a while after. Requests are
counted per phase (:func:`phases`): *before the kill*, *in flight at the kill*, *expert gone* (sent
from the kill to the expert's readiness), *after restart*. The budget (``GET /v1/budget``) is read at
the kill and after the load; Serve's placement (Ray's state API) before the kill and after the load.
Teardown (always, also on failure) stops Serve, detaches, then ends every process of each node it
started, by process id; it never runs ``ray stop``, which would stop every Ray instance on the machine.

    python -m experiments.benchmarks.cluster                 # results/cluster.{json,md}
    python -m experiments.benchmarks.cluster --before-s 10 --down-s 30 --after-s 15 --clients 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import numpy as np
import psutil

from cascade.config import CascadeConfig

RESULTS = Path(__file__).resolve().parent / "results"
RAY = str(Path(sys.executable).with_name("ray"))
HEAD_RESOURCE, EXPERT_RESOURCE = "head_node", "expert_node"
WORKER_PORTS = 64  # worker processes a node may start (each listens on one port of its range)
OBJECT_STORE_BYTES = 100 * 2**20  # Ray's minimum is ~75 MiB; the default (30% of memory) per node is waste here
DEPLOYMENTS = ("CascadeRouter", "BudgetHolder", "ExpertServer")
STARTED = "Ray runtime started."  # what `ray start` prints once its node has registered with the GCS
MIX = (False, False, False, True)  # per request in turn: a mail the rule keeps (False) or defers (True)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on (now).

    >>> first, second = free_ports(2)
    >>> first != second
    True
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_range(size: int, low: int = 20_000, high: int = 32_000) -> int:
    """The first port of ``size`` consecutive free ports below the kernel's ephemeral range."""
    for _ in range(100):
        first = random.randrange(low, high - size)
        try:
            free = [_bindable(port) for port in range(first, first + size)]
        except OSError:
            continue
        if all(free):
            return first
    raise RuntimeError(f"no {size} consecutive free ports in [{low}, {high})")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class RayNode:
    """One ``ray start --block`` of a :class:`LocalCluster`: its process (the session leader), folder, ports."""

    name: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    resources: dict[str, float]
    node_manager_port: int
    log: Path
    node_id: str | None = None

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node: its session (``ray start`` leads it) and their descendants."""
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self.process.pid:
                    found[process.pid] = process
            except (OSError, psutil.Error):
                continue
        for process in list(found.values()):
            try:
                found.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.Error:
                continue
        return list(found.values())


@dataclass
class LocalCluster:
    """A Ray cluster of several nodes on this machine, each with its own temp dir and ports.

    Only processes this object started are ever signalled (by id); ``shutdown`` leaves none running.
    """

    root: Path
    cpus_per_node: int = 1
    nodes: list[RayNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0
    failed_starts: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The head's dashboard (Ray's state API answers there)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(self, resources: dict[str, float], attempts: int = 3) -> RayNode:
        """Start the head node (GCS, dashboard for the state API); return once ``ray start`` says it runs."""
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)

        # `ray start` turns token authentication on when this machine has a token (~/.ray/auth_token) and
        # RAY_AUTH_MODE is unset; a driver given an explicit address does not. Decide here, as `ray start`
        # would, and let the nodes inherit the decision (RAY_AUTH_MODE=token in this process's environment).
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)

        def head_options() -> list[str]:
            self.gcs_port, self.dashboard_port, client_port = free_ports(3)
            return ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(client_port),
                    "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(self.dashboard_port)]

        return self._start_until_up("head", resources, head_options, attempts)

    def add_node(self, name: str, resources: dict[str, float], attempts: int = 3) -> RayNode:
        """Start a worker node joining the head; return once the GCS lists it alive (needs ``ray.init``)."""
        node = self._start_until_up(name, resources, lambda: ["--address", self.address], attempts)
        self.wait_alive(node)
        return node

    def _start_until_up(self, name: str, resources: dict[str, float], options: Callable[[], list[str]],
                        attempts: int, timeout_s: float = 90.0) -> RayNode:
        """``ray start`` until it says the node runs. It gives up when its raylet has not registered within
        30 s (fixed in Ray 2.60's ``node.py``), which happens on an overloaded machine: such a start is
        stopped, kept in ``failed_starts``, and tried again with fresh ports, ``attempts`` times in all."""
        for attempt in range(1, attempts + 1):
            node = self._start(name, resources, options())
            try:
                _wait_for(lambda: STARTED in node.log.read_text(errors="replace"), timeout_s,
                          f"node '{name}' to start", node)
                return node
            except (RuntimeError, TimeoutError) as exc:
                self.stop(node)
                self.nodes.remove(node)
                self.failed_starts.append(f"{name} (attempt {attempt}): {str(exc).splitlines()[-1]}")
                if attempt == attempts:
                    raise
        raise ValueError(f"attempts must be at least 1, got {attempts}")

    def wait_alive(self, node: RayNode, timeout_s: float = 60.0) -> str:
        """The node's id once the GCS lists it alive (this driver must be attached: ``ray.init``)."""
        import ray

        def alive() -> bool:
            for info in ray.nodes():
                if info["Alive"] and info["NodeManagerPort"] == node.node_manager_port:
                    node.node_id = info["NodeID"]
                    return True
            return False

        _wait_for(alive, timeout_s, f"node '{node.name}' to join", node)
        assert node.node_id is not None
        return node.node_id

    def kill(self, node: RayNode) -> tuple[list[str], float]:
        """SIGKILL every process of ``node`` at once (a machine losing power); their names, and when
        (``time.perf_counter()``) the signals went out."""
        victims = node.processes()
        names, killed_at = [], time.perf_counter()
        for process in victims:
            try:
                names.append(process.name())
                process.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(victims, timeout=10)
        node.process.wait(timeout=10)
        return sorted(names), killed_at

    def stop(self, node: RayNode, grace_s: float = 20.0) -> None:
        """SIGTERM the node's ``ray start`` (it stops its processes), then SIGKILL whatever is left."""
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill(node)

    def leftover(self) -> list[str]:
        """Processes of this cluster's nodes still running (``pid command``); none after ``shutdown``."""
        return [f"{process.pid} {' '.join(process.cmdline()[:2])}" for node in self.nodes
                for process in node.processes() if process.is_running()]

    def shutdown(self) -> list[str]:
        """Stop every node (workers first), delete the temp dirs; what could not be stopped."""
        for node in [*self.nodes[1:], *self.nodes[:1]]:
            try:
                self.stop(node)
            except (OSError, psutil.Error, subprocess.TimeoutExpired):
                continue
        left = self.leftover()
        if not left:
            shutil.rmtree(self.root, ignore_errors=True)
        return left

    def _start(self, name: str, resources: dict[str, float], extra: list[str]) -> RayNode:
        from deployments.app import SLOW_HOST_DEFAULTS

        node_manager, object_manager, agent_listen, agent_grpc, metrics, runtime_env = free_ports(6)
        first_worker_port = free_port_range(WORKER_PORTS)
        start = len(self.nodes) + len(self.failed_starts)  # names every start's folder and log apart
        temp_dir = self.root / f"{name}-{start}"
        command = [RAY, "start", "--block", *extra, "--node-ip-address", "127.0.0.1",
                   "--num-cpus", str(self.cpus_per_node), "--resources", json.dumps(resources),
                   "--temp-dir", str(temp_dir), "--object-store-memory", str(OBJECT_STORE_BYTES),
                   "--node-manager-port", str(node_manager), "--object-manager-port", str(object_manager),
                   "--dashboard-agent-listen-port", str(agent_listen), "--dashboard-agent-grpc-port", str(agent_grpc),
                   "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
                   "--min-worker-port", str(first_worker_port),
                   "--max-worker-port", str(first_worker_port + WORKER_PORTS - 1), "--disable-usage-stats"]
        # the nodes' own environment: Serve's controller and proxy run there, not in this driver
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env.update({key: env.get(key, value) for key, value in SLOW_HOST_DEFAULTS.items()})
        temp_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}-{start}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        node = RayNode(name, process, temp_dir, dict(resources), node_manager, log)
        self.nodes.append(node)
        return node


def _wait_for(done: Callable[[], bool], timeout_s: float, what: str, node: RayNode | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if node is not None and node.process.poll() is not None:
            tail = node.log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError("\n".join([f"waiting for {what}: `ray start` exited with {node.process.returncode}",
                                          *tail]))
        if time.monotonic() > deadline:
            tail = node.log.read_text(errors="replace").splitlines()[-15:] if node is not None else []
            raise TimeoutError("\n".join([f"waited {timeout_s:g} s for {what}", *tail]))
        time.sleep(0.5)


def cluster_config(workdir: Path, port: int) -> CascadeConfig:
    """``tests/serving.py``'s cascade (SpamAssassin, few-label TF-IDF small tier in the routers, knn-vote
    expert, rate budget 20% with a hard cap of 50%) for two router replicas, the expert pinned to
    ``expert_node``, routers and holder to ``head_node``. The window is longer than a run's requests, so
    ``observed`` counts every sample served; the threshold barely moves (learning rate 1e-9); the
    monitors are off (a mix with a quarter of uncertain mails is not the certified traffic)."""
    return CascadeConfig.model_validate({
        "name": "cluster-test",
        "artifact_dir": str(workdir / "artifact"),
        "dataset": {"name": "spamassassin", "max_samples": 1500, "label_budget": 100},
        "detector": {"kind": "tfidf-lr"},
        "calibrator": {"kind": "platt"},
        "policy": {"kind": "confidence"},
        "budget": {"kind": "rate", "target": 0.2, "hard_cap": 0.5, "window": 20_000, "learning_rate": 1e-9},
        "expert": {"kind": "knn-vote", "shots": 4, "labels": ["ham", "spam"]},
        "cost": {"small_per_call": 0.001, "expert_per_call": 1.0},
        "serve": {"host": "127.0.0.1", "port": port, "router_replicas": 2, "router_num_cpus": 0.2,
                  "expert_num_cpus": 0.5, "small_tier": "router", "expert_timeout_s": 2.0,
                  "expert_health_check_period_s": 2.0,
                  "resources": {"expert": {EXPERT_RESOURCE: 1}, "router": {HEAD_RESOURCE: 0.01},
                                "holder": {HEAD_RESOURCE: 0.01}},
                  "decision_log": {"url": f"sqlite:///{workdir / 'decisions.sqlite'}"},
                  "monitor": {"enabled": False}},
    })


def kept_and_deferred(config: CascadeConfig, count: int = 400) -> tuple[list[str], list[str]]:
    """Held-out mails the tuned rule keeps and ones it defers (cut to the app's text limit)."""
    from experiments.benchmarks.bench_serve import held_out_texts

    kept, deferred = held_out_texts(config, count)
    limit = config.serve.max_text_chars
    return [text[:limit] for text in kept], [text[:limit] for text in deferred]


def placement(cluster: LocalCluster) -> dict[str, list[dict[str, str]]]:
    """Where each live Serve actor runs: deployment (or ServeController, ProxyActor) -> [{node, node_id, actor_id}]."""
    from ray.util.state import list_actors

    names = {node.node_id: node.name for node in cluster.nodes}
    found: dict[str, list[dict[str, str]]] = {}
    for actor in list_actors(address=cluster.dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000):
        role = actor.class_name.rsplit(":", 1)[-1]
        if role in (*DEPLOYMENTS, "ServeController", "ProxyActor"):
            found.setdefault(role, []).append({"node": names.get(actor.node_id, "other"), "node_id": actor.node_id,
                                               "actor_id": actor.actor_id})
    return found


@dataclass
class Sent:
    """One request: when it was sent (seconds into the run), what came back."""

    sent_s: float
    latency_ms: float
    status: int | None  # None: no HTTP answer (lost)
    deferred: bool  # the rule defers this mail
    source: str | None = None  # small / expert, from the verdict
    degraded: bool = False
    reason: str | None = None  # why degraded (timeout, unavailable, circuit open, ...)
    error: str | None = None


class Load:
    """Closed-loop clients posting one mail per request to ``/v1/detect`` until stopped; every request kept."""

    def __init__(self, url: str, kept: Sequence[str], deferred: Sequence[str], clients: int, started: float,
                 timeout_s: float = 30.0) -> None:
        self.url, self.kept, self.deferred, self.clients = url, kept, deferred, clients
        self.started, self.timeout_s = started, timeout_s
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 5)

    def _client(self, index: int) -> None:
        turn = 0
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as http:
            while not self._stop.is_set():
                deferred = MIX[(turn + index) % len(MIX)]  # every client sends the mix, each from its own place
                pool = self.deferred if deferred else self.kept
                text = pool[(turn * self.clients + index) % len(pool)]
                turn += 1
                began = time.perf_counter()
                record = Sent(began - self.started, 0.0, None, deferred)
                try:
                    response = http.post("/v1/detect", json={"samples": [{"text": text}]})
                    record.status = response.status_code
                    if response.status_code == 200:
                        verdict = response.json()["verdicts"][0]
                        record.source, record.degraded = verdict["source"], bool(verdict["degraded"])
                        record.reason = verdict.get("degraded_reason")
                    else:
                        record.error = response.text[:200]
                except httpx.HTTPError as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
                record.latency_ms = (time.perf_counter() - began) * 1000.0
                with self._lock:
                    self.sent.append(record)


class Watch:
    """Polls ``/readyz``, the GCS's node table and Serve's status every ``period_s``; keeps each change with
    its time."""

    def __init__(self, url: str, nodes: list[RayNode], started: float, period_s: float = 0.5) -> None:
        self.url, self.nodes, self.started, self.period_s = url, nodes, started, period_s
        self.readiness: list[dict[str, Any]] = []
        self.node_states: list[dict[str, Any]] = []
        self.serve_states: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def now(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def ready(self) -> dict[str, Any] | None:
        """The latest readiness seen."""
        return self.readiness[-1] if self.readiness else None

    def _poll(self) -> None:
        import ray

        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            while not self._stop.is_set():
                try:
                    body = http.get("/readyz").json()
                    state = {key: body.get(key) for key in ("status", "expert", "breaker")}
                except (httpx.HTTPError, ValueError) as exc:
                    state = {"status": f"no answer ({type(exc).__name__})"}
                _changed(self.readiness, state, self.now())
                try:
                    alive = {info["NodeID"]: info["Alive"] for info in ray.nodes()}
                    nodes = {f"{node.name} {(node.node_id or '?')[:8]}": alive.get(node.node_id) for node in self.nodes}
                except Exception as exc:  # noqa: BLE001 - a GCS that does not answer is an observation here
                    nodes = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                _changed(self.node_states, {"alive": nodes}, self.now())
                try:
                    serve_state = _serve_status()
                except Exception as exc:  # noqa: BLE001 - as above, for Serve's controller
                    serve_state = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                _changed(self.serve_states, serve_state, self.now())
                self._stop.wait(self.period_s)


def _changed(timeline: list[dict[str, Any]], state: dict[str, Any], t_s: float) -> None:
    if not timeline or {k: v for k, v in timeline[-1].items() if k != "t_s"} != state:
        timeline.append({"t_s": t_s, **state})


def settled_budget(url: str, reads: int = 50) -> dict[str, Any]:
    """``GET /v1/budget`` once the routers' last reports have reached the holder (two equal reads)."""
    with httpx.Client(base_url=url, timeout=10.0) as http:
        previous = http.get("/v1/budget").json()
        for _ in range(reads):
            time.sleep(0.3)
            current = http.get("/v1/budget").json()
            if current == previous:
                return current
            previous = current
    return previous


def get_budget(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/budget", timeout=10.0).json()


def phase_counts(chosen: Sequence[Sent], start_s: float, end_s: float) -> dict[str, Any]:
    """The ``chosen`` requests (of the phase ``[start_s, end_s)``): answered, lost, per status, per source,
    degraded and why, latency."""
    latency = np.array([r.latency_ms for r in chosen if r.status is not None])
    statuses: dict[str, int] = {}
    for record in chosen:
        key = "lost" if record.status is None else str(record.status)
        statuses[key] = statuses.get(key, 0) + 1
    ok = [r for r in chosen if r.status == 200]
    reasons: dict[str, int] = {}
    for record in ok:
        if record.degraded:
            reasons[record.reason or "?"] = reasons.get(record.reason or "?", 0) + 1
    return {
        "from_s": round(start_s, 2), "to_s": None if end_s == float("inf") else round(end_s, 2), "sent": len(chosen),
        "answered": sum(r.status is not None for r in chosen), "lost": sum(r.status is None for r in chosen),
        "ok": len(ok), "server_errors": sum(r.status is not None and r.status >= 500 for r in chosen),
        "statuses": statuses, "deferred_mails": sum(r.deferred for r in ok),
        "by_expert": sum(r.source == "expert" for r in ok), "by_small": sum(r.source == "small" for r in ok),
        "expert_answers_sent_s": _span([r.sent_s for r in ok if r.source == "expert"]),
        "degraded_sent_s": _span([r.sent_s for r in ok if r.degraded]),
        "degraded": sum(r.degraded for r in ok), "degraded_reasons": reasons,
        "degraded_share": sum(r.degraded for r in ok) / max(1, len(ok)),
        "degraded_share_of_uncertain": sum(r.degraded for r in ok if r.deferred) / max(1, sum(r.deferred for r in ok)),
        **{f"p{q}_ms": float(np.percentile(latency, q)) if latency.size else None for q in (50, 95, 99)},
        "max_ms": float(latency.max()) if latency.size else None,
        "error_samples": sorted({r.error for r in chosen if r.error})[:5],
    }


def _span(times: Sequence[float]) -> list[float] | None:
    """The first and last of ``times`` (seconds into the run), ``None`` if there are none."""
    return [round(min(times), 2), round(max(times), 2)] if times else None


def _serve_status() -> dict[str, Any]:
    from ray import serve

    from deployments.app import APP_NAME

    app = serve.status().applications[APP_NAME]
    return {"app": str(app.status).rsplit(".", 1)[-1],
            **{name: {str(state).rsplit(".", 1)[-1]: count for state, count in d.replica_states.items()}
               for name, d in app.deployments.items()}}


def scenario(workdir: Path, *, clients: int = 4, before_s: float = 10.0, down_s: float = 30.0,
             after_s: float = 15.0, restart: bool = True, expert_back_s: float = 120.0) -> dict[str, Any]:
    """Tune, start the cluster and the app, load it, kill the worker node, (restart it), tear all down.

    ``down_s``: seconds of load after the kill before the worker is restarted (or, without ``restart``,
    before the load stops); ``expert_back_s``: how long the expert may take to answer again once the
    restarted node has joined (a restart that fails is reported as ``restart_error``).
    Returns the numbers (see the module docstring); ``teardown.leftover`` lists any process of the cluster
    still running afterwards (none expected), ``failed_node_starts`` the node starts that were retried.
    """
    import ray
    from ray import serve

    if ray.is_initialized():
        raise RuntimeError("this process is attached to a Ray instance already; the scenario attaches to its own")
    import policies.certify_ledger
    from deployments.app import run
    from policies.tune import tune

    timings: dict[str, float] = {}
    clock = begun = time.perf_counter()
    config = cluster_config(workdir, free_ports(1)[0])
    with mock.patch.object(policies.certify_ledger, "cache_dir", lambda name: workdir / name):
        tune(config, progress=False)  # a fixture, not a certificate anyone relies on: counted in this run's ledger
    kept, deferred = kept_and_deferred(config)
    timings["tune_s"] = time.perf_counter() - clock
    results: dict[str, Any] = {"setup": {
        "nodes_started": "ray start --block, one session, --temp-dir and ports per node, --num-cpus 1 each",
        "clients": clients, "mix": "3 mails the rule keeps : 1 it defers, one per request",
        "phases_s": {"before": before_s, "down_before_restart": down_s, "after": after_s}, "restart": restart,
        "mails": {"kept": len(kept), "deferred": len(deferred)},
        "serve": config.serve.model_dump(mode="json", include={
            "router_replicas", "router_num_cpus", "expert_num_cpus", "small_tier", "expert_timeout_s",
            "expert_health_check_period_s", "resources", "breaker"}),
        "budget": config.budget.model_dump(mode="json"), "expert": config.expert.kind}}
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp")))
    attached = False
    try:
        clock = time.perf_counter()
        head = cluster.start_head({HEAD_RESOURCE: 1})
        ray.init(address=cluster.address, logging_level="warning")
        attached = True
        cluster.wait_alive(head)
        worker = cluster.add_node("worker", {EXPERT_RESOURCE: 1})
        timings["cluster_start_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        serve.start(http_options={"host": config.serve.host, "port": config.serve.port}, proxy_location="HeadOnly")
        url = run(config)
        timings["app_start_s"] = time.perf_counter() - clock
        results["nodes"] = [{"name": n.name, "node_id": n.node_id, "resources": {**n.resources, "CPU": 1}}
                            for n in cluster.nodes]
        results["placement_before"] = placement(cluster)
        started = time.perf_counter()
        events: dict[str, float | None] = {}
        with Watch(url, cluster.nodes, started) as watch, Load(url, kept, deferred, clients, started) as load:
            time.sleep(before_s)
            results["budget_at_kill"] = get_budget(url)
            results["killed_processes"], killed_at = cluster.kill(worker)
            events["kill_s"] = round(killed_at - started, 2)
            results["survivors_of_kill"] = [process.pid for process in worker.processes()]
            time.sleep(down_s)
            worker_key = f"worker {(worker.node_id or '?')[:8]}"
            events["node_marked_dead_s"] = next(
                (state["t_s"] for state in watch.node_states if state["alive"].get(worker_key) is False), None)
            if restart:
                events["restart_s"] = watch.now()
                try:
                    again = cluster.add_node("worker-restarted", {EXPERT_RESOURCE: 1})
                except (RuntimeError, TimeoutError) as exc:  # reported: what was measured until here stands
                    results["restart_error"] = str(exc)
                else:
                    events["worker_alive_s"] = watch.now()
                    results["new_worker"] = {"name": again.name, "node_id": again.node_id}
                    events["expert_up_s"] = _expert_back(watch, expert_back_s)
                    time.sleep(after_s if events["expert_up_s"] is not None else 0.0)
            events["load_stopped_s"] = watch.now()
        results["events"] = events
        results["readiness"], results["node_states"] = watch.readiness, watch.node_states
        results["serve_states"] = watch.serve_states
        results["budget_after"] = settled_budget(url)
        results["placement_after"] = placement(cluster)
        results["phases"] = phases(load.sent, events)
        results["totals"] = phase_counts(load.sent, 0.0, float("inf"))
    finally:
        clock = time.perf_counter()
        if attached:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        results["failed_node_starts"] = cluster.failed_starts
        results["teardown"] = {"leftover": cluster.shutdown(), "seconds": round(time.perf_counter() - clock, 1)}
    timings["teardown_s"] = results["teardown"]["seconds"]
    timings["load_s"] = events["load_stopped_s"] or 0.0
    timings["total_s"] = time.perf_counter() - begun
    results["timings"] = {key: round(value, 1) for key, value in timings.items()}
    return results


def _expert_back(watch: Watch, limit_s: float) -> float | None:
    """When ``/readyz`` first said the expert is up with the breaker closed (``None``: not within ``limit_s``)."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        ready = watch.ready() or {}
        if ready.get("expert") == "up" and ready.get("breaker") == "closed":
            return float(ready["t_s"])
        time.sleep(0.5)
    return None


def phases(sent: Sequence[Sent], events: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """The requests by phase: answered *before the kill*; sent before it and answered after (*in flight at the
    kill*); sent after it until the expert was back (*expert gone*); sent after that (*after restart*)."""
    kill, back, end = events["kill_s"] or 0.0, events.get("expert_up_s"), float("inf")
    gone_until = back if back is not None else end
    found = {
        "before the kill": phase_counts([r for r in sent if r.sent_s + r.latency_ms / 1000 < kill], 0.0, kill),
        "in flight at the kill": phase_counts(
            [r for r in sent if r.sent_s < kill <= r.sent_s + r.latency_ms / 1000], kill, kill),
        "expert gone": phase_counts([r for r in sent if kill <= r.sent_s < gone_until], kill, gone_until)}
    if back is not None:
        found["after restart"] = phase_counts([r for r in sent if r.sent_s >= back], back, end)
    return found


def budget_continuity(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the budget kept across the node's loss: window and counts only grew, target and threshold held."""
    return {"observed_grew": after["observed"] >= before["observed"],
            "forced_total_grew": after["forced_total"] >= before["forced_total"],
            "target_kept": after["target"] == before["target"],
            "threshold_change": after["threshold"] - before["threshold"],
            "resumed_a_checkpoint": after.get("resumed"), "replicas": after.get("replicas")}


def markdown(results: dict[str, Any]) -> str:
    """The results as a short markdown report."""
    setup, events = results["setup"], results.get("events", {})
    serve = setup["serve"]
    lines = ["# Multi-node Ray cluster: the expert's node killed under load", "",
             f"Two Ray nodes on this machine ({setup['nodes_started']}); the cascade app (knn-vote expert, "
             f"{serve['router_replicas']} router replicas, one budget holder) deployed from a driver attached to the "
             f"head with `serve.resources` = `{json.dumps(serve['resources'])}`; Serve's proxy on the head only. "
             f"{setup['clients']} closed-loop clients, {setup['mix']}, no retries; expert timeout "
             f"{serve['expert_timeout_s']:g} s, breaker after {serve['breaker']['failures']} failures. The worker node "
             "is killed with SIGKILL to every one of its processes, then started again. Requests by phase: answered "
             "before the kill; sent before and answered after it (in flight); sent after it until `/readyz` said the "
             "expert was up with the breaker closed (expert gone; `/readyz` answers from one router replica, each "
             "has its own breaker); sent after that (after restart).", "",
             "## Requests by phase", "",
             "| phase | sent | answered | lost | 5xx | by expert | by small | degraded | degraded share "
             "| degraded / uncertain mails | why degraded | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, p in {**results.get("phases", {}), "all": results.get("totals", {})}.items():
        if p:
            lines.append(f"| {name} | {p['sent']} | {p['answered']} | {p['lost']} | {p['server_errors']} | "
                         f"{p['by_expert']} | {p['by_small']} | {p['degraded']} | {p['degraded_share']:.1%} | "
                         f"{p['degraded_share_of_uncertain']:.0%} | {_reasons(p['degraded_reasons'])} | "
                         f"{_ms(p['p50_ms'])} | {_ms(p['p99_ms'])} | {_ms(p['max_ms'])} |")
    spans = [f"{name}: expert {_span_text(p['expert_answers_sent_s'])}, degraded {_span_text(p['degraded_sent_s'])}"
             for name, p in results.get("phases", {}).items()]
    lines += ["", "When those answers were sent (seconds from the start of the load): " + "; ".join(spans) + "."]
    restarted = results.get("new_worker")
    new_worker = [restarted | {"resources": {EXPERT_RESOURCE: 1, "CPU": 1}}] if restarted else []
    lines += ["", "## Nodes and placement", "", "| node | node id | resources |", "|---|---|---|"]
    lines += [f"| {node['name']} | `{node['node_id'][:12]}` | {json.dumps(node['resources'])} |"
              for node in results.get("nodes", []) + new_worker]
    lines += ["", "| actor | before the kill | after the load |", "|---|---|---|"]
    for role in (*DEPLOYMENTS, "ServeController", "ProxyActor"):
        lines.append(f"| {role} | {_where(results.get('placement_before', {}).get(role, []))} | "
                     f"{_where(results.get('placement_after', {}).get(role, []))} |")
    lines += ["", "## Timeline (seconds from the start of the load)", ""]
    lines += [f"- {key.removesuffix('_s').replace('_', ' ')}: {_s(value)}" for key, value in events.items()]
    if "restart_error" in results:
        lines += ["", "The restart failed:", "", "```", results["restart_error"], "```"]
    for title, timeline in (("Readiness (`/readyz`, polled every 0.5 s)", "readiness"),
                            ("Nodes alive (GCS)", "node_states"),
                            ("Serve's status (application, replicas per state)", "serve_states")):
        lines += ["", f"{title}:", ""]
        lines += [f"- {e['t_s']:.1f} s: " + ", ".join(f"{k} {v}" for k, v in e.items() if k != "t_s")
                  for e in results.get(timeline, [])]
    if "budget_after" in results:
        before, after = results["budget_at_kill"], results["budget_after"]
        lines += ["", "## Budget (`GET /v1/budget`)", "", "| | at the kill | after the load |", "|---|---:|---:|"]
        lines += [f"| {key} | {before.get(key)} | {after.get(key)} |" for key in (
            "observed", "window", "realised_rate", "target", "threshold", "forced_total", "replicas", "resumed")]
        lines += ["", f"Continuity: `{json.dumps(budget_continuity(before, after))}`; requests answered 200 in all: "
                      f"{results['totals']['ok']}."]
    lines += ["", f"Timings (s): `{json.dumps(results.get('timings', {}))}`; processes killed with the worker node: "
                  f"{', '.join(results.get('killed_processes', []))} (alive after the kill: "
                  f"{len(results.get('survivors_of_kill', []))}); left running after teardown: "
                  f"{len(results.get('teardown', {}).get('leftover', []))}; node starts that failed and were "
                  f"retried: {results.get('failed_node_starts') or 'none'}.", "",
              "Reproduce: `python -m experiments.benchmarks.cluster` (numbers: `cluster.json`)."]
    return "\n".join(lines)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def _span_text(span: list[float] | None) -> str:
    return "-" if span is None else f"{span[0]:.1f}-{span[1]:.1f}"


def _where(actors: Sequence[dict[str, str]]) -> str:
    return ", ".join(f"{a['node']} `{a['node_id'][:8]}`" for a in actors) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    from cascade.logs import library_logs
    from experiments.benchmarks.results_io import write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--before-s", type=float, default=10.0, help="load before the kill")
    parser.add_argument("--down-s", type=float, default=30.0, help="load after the kill before the restart")
    parser.add_argument("--after-s", type=float, default=15.0, help="load once the expert is back")
    parser.add_argument("--no-restart", action="store_true", help="leave the worker node dead")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cascade-cluster-"))
    try:
        with library_logs("cluster"):
            results = scenario(workdir, clients=args.clients, before_s=args.before_s, down_s=args.down_s,
                               after_s=args.after_s, restart=not args.no_restart)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_results(args.out, "cluster", results, markdown)
    print(markdown(results))


if __name__ == "__main__":
    main()
