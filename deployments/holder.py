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
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ray import serve

from cascade.config import CascadeConfig, ConfigError
from deployments.served import ServedPolicy
from deployments.knobs import HOLDER_KNOBS, with_knobs
from policies.leases import BudgetLedger, Lease, Report

CHECKPOINT_VERSION = 2  # 2: the controller snapshot carries the served rule, coverage and forced acceptances
KV_NAMESPACE = "cascade"


def budget_fingerprint(config: CascadeConfig, served: ServedPolicy) -> str:
    """What a checkpoint must match to be resumed: threshold, certificate, budget settings, version."""
    basis = {"version": CHECKPOINT_VERSION, "threshold": served.threshold, "certificate": served.certificate,
             "budget": config.budget.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


@serve.deployment
class BudgetHolder:
    """The app's :class:`~policies.leases.BudgetLedger` (one replica; see the module docstring)."""

    def __init__(self, config: CascadeConfig, served: ServedPolicy) -> None:
        shared = config.serve.shared_budget
        self._config = config
        self._declared: float | None = None
        self._key = f"cascade/{serve.get_replica_context().app_name}/budget"
        self._fingerprint = budget_fingerprint(config, served)
        stored = self._load()
        if stored is not None and stored.get("fingerprint") == self._fingerprint:
            self._ledger = BudgetLedger.restore(stored["ledger"], shared.lease_deferrals, shared.lease_ttl_s)
            self._declared = stored.get("declared")
            self.resumed = True
        else:
            self._ledger = BudgetLedger(served.controller(config), shared.lease_deferrals, shared.lease_ttl_s)
            self.resumed = False
        self._save()

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
        try:
            self._ledger.set_target(target)
        except ValueError as exc:
            raise ConfigError(f"user_config.budget.target: {exc}") from None
        self._declared = target
        self._save()

    async def exchange(self, report: Report) -> Lease:
        """Account for a router replica's report; its next lease."""
        lease = self._ledger.exchange(report)
        self._save()
        return lease

    async def state(self) -> dict[str, Any]:
        """The app's budget now (the controller's state, leases, whether it resumed a checkpoint)."""
        return {**self._ledger.state(), "resumed": self.resumed}

    async def set_target(self, target: float) -> dict[str, Any]:
        """Change the target; ``{"error": ...}`` when the controller refuses it."""
        try:
            self._ledger.set_target(target)
        except ValueError as exc:
            return {"error": str(exc)}
        self._save()
        return await self.state()

    def _load(self) -> dict[str, Any] | None:
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(self._key, namespace=KV_NAMESPACE)
        return json.loads(raw) if raw else None

    def _save(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        value = json.dumps({"fingerprint": self._fingerprint, "ledger": self._ledger.snapshot(),
                            "declared": self._declared})
        _internal_kv_put(self._key, value, overwrite=True, namespace=KV_NAMESPACE)
