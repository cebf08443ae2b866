"""``BudgetHolder``: the one replica that holds the app's deferral budget, checkpointed in Ray's KV.

Router replicas exchange per-batch reports for leases of deferral allowance
(:mod:`policies.leases`); ``GET``/``PUT /v1/budget`` read and change it here, so every router
decides with the same target, threshold, window and hard cap. Before it answers an exchange or a
change, the holder writes its state (controller and live leases) to Ray's internal KV under
``cascade/<app>/budget``, so a restarted holder resumes where it was, and a restarted router loses
nothing (its unreported lease expires). The checkpoint is keyed by a fingerprint of what it depends
on (the artifact's threshold and certificate, the budget settings, a format version): an app
deployed with a different budget starts fresh. It lives as long as the Ray cluster. A target
declared in the holder's ``user_config`` (``serve deploy``) is applied when the declaration changes.

The holder also keeps the served certificate (:class:`~deployments.keeper.CertificateKeeper`): every
``serve.monitor.interval_s`` it reads the decision log, feeds the anytime-valid monitors and acts on
an alarm (alert, fallback, recertify). Each event is one JSON line on the ``cascade.monitor``
logger (the replica's log file); the monitors' evidence and alarms are gauges
(``ray_cascade_monitor_evidence``, ``ray_cascade_monitor_alarm``), re-certifications a counter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from typing import Any

from ray import serve

from cascade.config import CascadeConfig, ConfigError
from deployments.served import ServedPolicy, tenant_config, watched
from deployments.knobs import HOLDER_KNOBS, with_knobs
from policies.leases import BudgetLedger, Lease, Report
from policies.tenants import TenantLedgers, UnknownTenant, app_cap_ledger

CHECKPOINT_VERSION = 4  # 4: one ledger per tenant and the app-wide cap
monitor_log = logging.getLogger("cascade.monitor")
KV_NAMESPACE = "cascade"


def budget_fingerprint(config: CascadeConfig, served: ServedPolicy) -> str:
    """What a checkpoint must match to be resumed: threshold, certificate, budget settings, version."""
    basis = {"version": CHECKPOINT_VERSION, "threshold": served.threshold, "certificate": served.certificate,
             "budget": config.budget.model_dump(mode="json"),
             "tenants": [t.model_dump(mode="json", exclude={"token_env", "token_file"}) for t in config.serve.tenants],
             "app_hard_cap": config.serve.app_hard_cap}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


@serve.deployment
class BudgetHolder:
    """The app's :class:`~policies.leases.BudgetLedger` (one replica; see the module docstring)."""

    async def __init__(self, config: CascadeConfig, served: ServedPolicy) -> None:
        shared = config.serve.shared_budget
        self._config = config
        self._declared: float | None = None
        self._key = f"cascade/{serve.get_replica_context().app_name}/budget"
        self._fingerprint = budget_fingerprint(config, served)
        stored = self._load()
        if stored is not None and stored.get("fingerprint") == self._fingerprint:
            self._ledger = TenantLedgers.restore(stored["ledger"], shared.lease_deferrals, shared.lease_ttl_s)
            self._declared = stored.get("declared")
            self.resumed = True
        else:
            self._ledger = tenant_ledgers(config, served)
            self.resumed = False
        self._keeper = self._watcher = None
        self._read_error: str | None = None
        if watched(config) and served.certificate is not None:
            from cascade.decision_setup import open_decision_log
            from deployments.keeper import CertificateKeeper

            snapshot = stored.get("watch") if self.resumed and stored is not None else None
            log = await asyncio.to_thread(open_decision_log, config)
            self._keeper = await asyncio.to_thread(CertificateKeeper, config, served, log, served.reference, snapshot)
            self._inform()
            self._metrics = _monitor_metrics()
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self._save()

    async def _watch(self) -> None:
        """Read the log, feed the monitors, act; forever, every ``serve.monitor.interval_s``."""
        keeper = self._keeper
        assert keeper is not None
        while True:
            try:
                reading = await asyncio.to_thread(keeper.read)
                events = keeper.apply(reading, self._ledger)  # on the loop: never during an exchange
                self._read_error = None
            except Exception as exc:
                events, self._read_error = [], f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                monitor_log.exception("cascade monitor: the decision log could not be read")
            self._inform()
            for event in events:
                monitor_log.warning(json.dumps(event, sort_keys=True, default=str))
                if event["event"] == "recertified":
                    self._metrics["recertified"].inc()
            if events:
                self._save()
            for name, monitor in keeper.state()["monitors"].items():
                self._metrics["evidence"].set(monitor["evidence"], tags={"monitor": name})
                self._metrics["alarm"].set(float(monitor["alarm"]), tags={"monitor": name})
            await asyncio.sleep(self._config.serve.monitor.interval_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's ``user_config``: a declared ``budget.target`` (:mod:`deployments.knobs`), applied when
        it differs from the last one declared, so a later ``PUT /v1/budget`` survives holder restarts."""
        target = with_knobs(self._config, user_config, HOLDER_KNOBS).budget.target
        if "target" not in user_config.get("budget", {}) or target == self._declared:
            return
        if self._config.budget.served_rule == "certified":
            raise ConfigError("user_config.budget.target: this app serves the certified rule as it is "
                              "(budget.served_rule: certified); a target does not move it")
        if self._config.budget.kind != "rate":
            raise ConfigError(f"user_config.budget.target: only a rate budget's target changes at run time; this "
                              f"app's budget is '{self._config.budget.kind}'")
        own = {t.name for t in self._config.serve.tenants if t.target is not None}
        try:  # every tenant without a target of its own
            for tenant, ledger in self._ledger.members():
                if tenant not in own:
                    ledger.set_target(target)
        except ValueError as exc:
            raise ConfigError(f"user_config.budget.target: {exc}") from None
        self._declared = target
        self._save()

    async def exchange(self, report: Report) -> Lease:
        """Account for a router replica's report; its next lease."""
        lease = self._ledger.exchange(report)
        self._save()
        if self._keeper is not None and self._keeper.in_doubt:
            lease = dataclasses.replace(lease, covered=False)  # an alarm stands: answers are outside the certificate
        return lease

    async def state(self, tenant: str | None = None) -> dict[str, Any]:
        """A tenant's budget now (the controller's state, leases, whether it resumed a checkpoint), the
        app-wide cap's window, and the watch of the certificate; ``{"error": ...}`` for an unknown tenant."""
        try:
            ledger = self._ledger.ledger(tenant)
        except UnknownTenant as exc:
            return {"error": str(exc)}
        state = {**ledger.state(), "resumed": self.resumed, "tenant": tenant, "app": self._ledger.app_state()}
        if self._keeper is not None:
            state["watch"] = {**self._keeper.state(), "error": self._read_error}
        return state

    async def set_target(self, target: float, tenant: str | None = None) -> dict[str, Any]:
        """Change a tenant's target; ``{"error": ...}`` when the controller refuses it."""
        try:
            self._ledger.ledger(tenant).set_target(target)
        except (ValueError, UnknownTenant) as exc:
            return {"error": str(exc).strip('"')}
        self._save()
        return await self.state(tenant)

    def _inform(self) -> None:
        """What every lease tells the router replicas: the served certificate's id and its watch."""
        if self._keeper is not None:
            for _, ledger in self._ledger.members():
                ledger.info = self._keeper.lease_info()

    def _load(self) -> dict[str, Any] | None:
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(self._key, namespace=KV_NAMESPACE)
        return json.loads(raw) if raw else None

    def _save(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        keeper = getattr(self, "_keeper", None)
        value = json.dumps({"fingerprint": self._fingerprint, "ledger": self._ledger.snapshot(),
                            "declared": self._declared, "watch": keeper.snapshot() if keeper is not None else None})
        _internal_kv_put(self._key, value, overwrite=True, namespace=KV_NAMESPACE)


def _monitor_metrics() -> dict[str, Any]:
    from ray.serve.metrics import Counter, Gauge

    return {"evidence": Gauge("cascade_monitor_evidence", "e-process of each monitor of the served certificate "
                              "(alarm at 1/delta)", tag_keys=("monitor",)),
            "alarm": Gauge("cascade_monitor_alarm", "1 while the monitor's alarm stands", tag_keys=("monitor",)),
            "recertified": Counter("cascade_recertifications_total", "served rules swapped for a re-certified one")}


def tenant_ledgers(config: CascadeConfig, served: ServedPolicy) -> TenantLedgers:
    """A ledger per tenant (``None`` for an app without tenants), each serving the certified rule with the
    tenant's target, cap and window, and the app-wide cap's ledger when ``serve.app_hard_cap`` is set."""
    shared = config.serve.shared_budget
    names = [t.name for t in config.serve.tenants] or [None]
    ledgers = {name: BudgetLedger(served.controller(tenant_config(config, name)), shared.lease_deferrals,
                                  shared.lease_ttl_s) for name in names}
    app = None if config.serve.app_hard_cap is None else app_cap_ledger(
        config.serve.app_hard_cap, config.budget.window, shared.lease_deferrals, shared.lease_ttl_s)
    return TenantLedgers(ledgers, app)
