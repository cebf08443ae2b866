"""Build and start the cascade as one Ray Serve app: ``SmallDetector``, ``ExpertServer``, ``CascadeRouter``
and the ``BudgetHolder`` every router replica shares (no ``SmallDetector`` when a cheap small tier runs
inside the routers: ``serve.small_tier``).

Three ways in, one builder underneath:

* Python: ``url = run("experiments/configs/spamassassin.yaml")`` (returns once every replica is
  ready; ``blocking=True`` serves until Ctrl-C, SIGTERM or SIGHUP, then stops what it started: :func:`stop`);
* ``cascade serve CONFIG`` calls :func:`run` with ``blocking=True``;
* ``serve run deployments/configs/spamassassin.yaml`` imports :func:`app_builder`.

Replica counts, fractional ``num_cpus``, batching and autoscaling come from ``config.serve``; the
Serve config YAML names the ``CascadeConfig`` and adds only what Ray Serve reads before the builder
runs (``http_options``), which the builder checks against ``serve.host`` / ``serve.port``.
Every deployment has a bounded queue (``serve.*_max_queued_requests``): an overloaded router
answers 503 with ``Retry-After`` from Serve's proxy, an overloaded detector 503 from the router, an
overloaded expert a degraded answer. ``serve.autoscaling`` maps a role (``detector``, ``expert``,
``router``) to a Ray Serve ``autoscaling_config`` (checked when the config loads); a role listed there
is autoscaled instead of using its replica count.
The fitted artifact is loaded here, in the driver, before anything is deployed, so a wrong or
corrupt artifact fails at start and never at the first request. The router's metrics
(``ray_cascade_*``) are exported by Ray's metrics agent; to choose the Prometheus port, start Ray
first (``ray start --head --metrics-export-port 8080``) and run with ``RAY_ADDRESS=auto``.

>>> run("experiments/configs/spamassassin.yaml")   # doctest: +SKIP
'http://127.0.0.1:8000'
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingConfig, BackpressureConfig

from cascade.config import CascadeConfig, ConfigError, served_tiers
from deployments.served import load_served, tier_view
from deployments.control import ControlAccess, TenantAccess
from deployments.detector import SmallDetector, small_in_router
from deployments.expert import ExpertServer, expert_env
from deployments.holder import BudgetHolder
from deployments.knobs import router_user_config
from deployments.router import CascadeRouter

APP_NAME = "cascade"
HOLDER_MAX_ONGOING_REQUESTS = 256  # lease exchanges: short, one per router batch
_PASSED_ENV = ("CASCADE_HOME",)  # and serve.decision_log.url_env (a database URL kept out of the YAML)


class AppArgs(BaseModel):
    """``args`` of the application in a Serve config YAML."""

    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="path of the CascadeConfig YAML (relative to the working directory)")


def build_app(config: CascadeConfig) -> Application:
    """The bound Serve application for ``config`` (loads and checks the artifact; starts nothing)."""
    config = _absolute_paths(config)
    served = load_served(config)
    options = deployment_options(config)
    detector = None if small_in_router(config) else SmallDetector.options(**options["detector"]).bind(
        str(served.small_dir), config.serve.max_batch_size, config.serve.batch_wait_timeout_s)
    expert: Any = ExpertServer.options(**options["expert"]).bind(config)
    if config.tiers is not None:  # a chain: one expert deployment per tier, each with its own replicas and queue
        expert = {tier.name: ExpertServer.options(**tier_options(config, tier.name, options["expert"])).bind(
            config, tier.name) for tier in served_tiers(config)}
    holder = BudgetHolder.options(**options["holder"]).bind(config, served)
    access = ControlAccess.from_config(config.serve.control)  # read here: only its digest reaches the replicas
    feedback = ControlAccess.from_config(config.serve.feedback, "feedback")
    tenants = TenantAccess.from_config(config.serve.tenants)  # a tenant without its token fails here, at build
    return CascadeRouter.options(**options["router"]).bind(config, served, access, feedback, tenants, detector, expert,
                                                           holder)


def deployment_options(config: CascadeConfig) -> dict[str, dict[str, Any]]:
    """Serve options per role: replicas or autoscaling, ``max_ongoing_requests``, CPUs, environment.

    >>> from cascade.config import CascadeConfig
    >>> cfg = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}})
    >>> deployment_options(cfg)["expert"]["ray_actor_options"]["num_cpus"]
    0.5
    """
    settings = config.serve
    autoscaling = {role: AutoscalingConfig(**values) for role, values in (settings.autoscaling or {}).items()}
    passed = _PASSED_ENV + ((settings.decision_log.url_env,) if settings.decision_log.url_env else ())
    env = {name: os.environ[name] for name in passed if name in os.environ}
    roles = {
        "detector": (settings.detector_replicas, settings.detector_num_cpus, {}, 2 * settings.max_batch_size,
                     settings.detector_max_queued_requests),
        "expert": (settings.expert_replicas, settings.expert_num_cpus, expert_env(config),
                   2 * config.expert.max_num_seqs, settings.expert_max_queued_requests),
        "router": (settings.router_replicas, settings.router_num_cpus, {}, settings.router_max_ongoing_requests,
                   settings.router_max_queued_requests),
    }
    options: dict[str, dict[str, Any]] = {}
    for role, (replicas, num_cpus, role_env, max_ongoing, max_queued) in roles.items():
        scale: dict[str, Any] = (
            {"autoscaling_config": autoscaling[role]} if role in autoscaling else {"num_replicas": replicas})
        options[role] = {**scale, "max_ongoing_requests": max_ongoing, "max_queued_requests": max_queued,
                         # internal hops: the router's access log and metrics already cover each request
                         "logging_config": {"enable_access_log": role == "router"},
                         "ray_actor_options": {"num_cpus": num_cpus, "runtime_env": {"env_vars": {**env, **role_env}}}}
    shared = settings.shared_budget
    options["holder"] = {"num_replicas": 1, "max_ongoing_requests": HOLDER_MAX_ONGOING_REQUESTS,
                         "max_queued_requests": shared.max_queued_requests,
                         "logging_config": {"enable_access_log": False},
                         "ray_actor_options": {"num_cpus": shared.num_cpus, "runtime_env": {"env_vars": env}}}
    for role, resources in (settings.resources or {}).items():  # pin a role to the nodes offering these
        options[role]["ray_actor_options"]["resources"] = dict(resources)
    options["router"]["user_config"] = router_user_config(config)  # runtime knobs: serve deploy changes them in place
    options["router"]["backpressure_config"] = BackpressureConfig(status_code=503, retry_after_s=settings.retry_after_s)
    options["expert"]["health_check_period_s"] = settings.expert_health_check_period_s
    return options


def tier_options(config: CascadeConfig, tier: str, expert: dict[str, Any]) -> dict[str, Any]:
    """The expert role's Serve options for one chain tier: its deployment name (``ExpertServer-<tier>``), the
    calls its replica takes at once and the environment its expert kind needs (vLLM's CPU settings)."""
    view = tier_view(config, tier)
    actor = expert["ray_actor_options"]
    env = {**actor["runtime_env"]["env_vars"], **expert_env(view)}
    return {**expert, "name": f"ExpertServer-{tier}", "max_ongoing_requests": 2 * view.expert.max_num_seqs,
            "ray_actor_options": {**actor, "runtime_env": {"env_vars": env}}}


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for ``serve run`` / ``serve deploy`` (``import_path: deployments.app:app_builder``);
    ``args`` are the application's ``args`` (:class:`AppArgs`). The running Serve instance must listen
    where the config's ``serve.host`` / ``serve.port`` say (the Serve YAML's ``http_options``)."""
    path = AppArgs.model_validate(args).config
    config = CascadeConfig.from_yaml(path)
    check_http_options(config, serve_http_options(), source=path)
    return build_app(config)


def check_http_options(config: CascadeConfig, listening: tuple[str, int] | None, source: str = "<config>") -> None:
    """Refuse a Serve instance that listens elsewhere than ``config.serve`` says (``None``: no instance known).

    >>> from cascade.config import CascadeConfig
    >>> cfg = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}})
    >>> check_http_options(cfg, ("127.0.0.1", 8001))
    Traceback (most recent call last):
    ...
    cascade.config.ConfigError: <config>: serve.port is 8000 but Ray Serve listens on port 8001 (http_options.port of the Serve config); make them equal
    """
    if listening is None:
        return
    host, port = listening
    for field, want, have in (("host", config.serve.host, host), ("port", config.serve.port, port)):
        if want != have:
            raise ConfigError(f"{source}: serve.{field} is {want} but Ray Serve listens on {field} {have} "
                              f"(http_options.{field} of the Serve config); make them equal")


def serve_http_options() -> tuple[str, int] | None:
    """(host, port) of the running Serve instance's HTTP proxies, or ``None`` without Ray or Serve."""
    import ray

    if not ray.is_initialized():
        return None
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    http = client.http_config
    return str(http.host), int(http.port)


# Serve's proxy must pass its readiness check within 5 s by default; on a busy 2-core machine (a vLLM
# engine loading beside it) it misses that and is killed and restarted in a loop. Longer checks here.
SLOW_HOST_DEFAULTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


def init_ray(**options: Any) -> bool:
    """Start a local Ray instance (unless one is running) with Serve's health checks relaxed; return whether
    this call started it (``False``: Ray was initialised already, or ``ray.init`` joined a running cluster,
    named by ``RAY_ADDRESS`` or ``address`` or found on this machine)."""
    import ray

    for variable, value in SLOW_HOST_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    if ray.is_initialized():
        return False
    ray.init(**{"include_dashboard": False, "logging_level": "warning", **options})
    node = ray._private.worker._global_node  # Ray has no public flag: a joined cluster is a connect-only node
    return node is not None and node.is_head()


def run(config: CascadeConfig | str | Path, *, blocking: bool = False, name: str = APP_NAME,
        on_ready: Callable[[str], None] | None = None) -> str:
    """Start the app on ``serve.host:serve.port``; return its URL once every replica is ready.

    Starts a local Ray instance first unless one is running (or ``RAY_ADDRESS`` names a cluster).
    ``on_ready(url)`` is called once the app answers; with ``blocking=True`` the call then serves
    until Ctrl-C, SIGTERM or SIGHUP (:func:`interrupt_on_stop_signals`) and returns after :func:`stop`.
    """
    if not isinstance(config, CascadeConfig):
        config = CascadeConfig.from_yaml(config)
    app = build_app(config)
    url = f"http://{config.serve.host}:{config.serve.port}"
    started_ray = init_ray()
    check_http_options(config, serve_http_options())  # a Serve instance already running keeps its own options
    if not blocking:
        _start(app, config, name, url, on_ready)
        return url
    with interrupt_on_stop_signals():  # installed after ray.init, which sets a SIGTERM handler of its own
        try:
            _start(app, config, name, url, on_ready)
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            stop(name, started_ray=started_ray)
    return url


def _start(app: Application, config: CascadeConfig, name: str, url: str,
           on_ready: Callable[[str], None] | None) -> None:
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(app, name=name, route_prefix="/", blocking=False)
    if on_ready is not None:
        on_ready(url)


def stop(name: str = APP_NAME, *, started_ray: bool) -> None:
    """Take down what :func:`run` started, and nothing more.

    ``started_ray``: this process started the local Ray instance (:func:`init_ray`): Serve shuts down,
    then Ray, and every Ray process (GCS, raylet, agents, replicas) has exited when this returns.
    Otherwise the cluster, its Serve instance (controller, proxies) and any other application on it
    belong to whoever started them: only the application ``name`` is deleted, and this driver's
    connection is left to its owner (``ray.shutdown()``, or the interpreter's exit).
    """
    import ray

    if not started_ray:
        serve.delete(name)
        return
    serve.shutdown()
    ray.shutdown(wait_for_processes=True)


STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)  # a supervisor's stop, a closed terminal


@contextmanager
def interrupt_on_stop_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block the first of ``signals`` raises ``KeyboardInterrupt``, so that it takes Ctrl-C's
    way out; later ones are ignored, so that they cannot cut that shutdown short. The previous handlers
    come back after the block. Outside the main thread, where Python sets no handlers, nothing changes.

    >>> with interrupt_on_stop_signals():  # doctest: +SKIP
    ...     os.kill(os.getpid(), signal.SIGTERM)
    Traceback (most recent call last):
    KeyboardInterrupt: SIGTERM
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        for stop_signal in signals:
            signal.signal(stop_signal, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {stop_signal: signal.signal(stop_signal, interrupt) for stop_signal in signals}
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def _absolute_paths(config: CascadeConfig) -> CascadeConfig:
    """Resolve relative paths (artifact, data file, model folder) here: replicas run elsewhere."""
    update: dict[str, Any] = {"artifact_dir": str(Path(config.artifact_dir).resolve())}
    if config.dataset.path:
        update["dataset"] = config.dataset.model_copy(update={"path": str(Path(config.dataset.path).resolve())})
    if Path(config.expert.model).exists():
        update["expert"] = config.expert.model_copy(update={"model": str(Path(config.expert.model).resolve())})
    return config.model_copy(update=update)
