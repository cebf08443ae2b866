"""The served certificate's keeper: reads the decision log, feeds the monitors, acts on an alarm. Free of Ray.

The :class:`~deployments.holder.BudgetHolder` owns one keeper beside the app's budget ledger (one
replica: the monitors see the whole app's traffic). Every ``serve.monitor.interval_s`` the holder
calls :meth:`CertificateKeeper.read` in a thread (database reads) and then :meth:`CertificateKeeper.apply`
on its event loop (monitors, actions, the swap), so a rule is swapped between two exchanges,
never during one.

* Decisions are read by decision time, up to ``settle_s`` ago (router replicas flush their logs
  off the request path); labels by arrival time, re-reading a margin and skipping ids already seen.
* Only decisions served under the current certificate (their ``certificate_id``) feed its monitors.
  After a restart the keeper replays the log for that certificate, so the monitors resume with the
  evidence they had (decisions pruned by retention are gone from it).
* On alarm, ``serve.monitor.action``: ``alert`` reports it; ``fallback`` serves the most
  conservative certified rule (accepted-error, joint: the lowest-threshold rule that passed
  Learn-then-Test; rate, cost: the threshold may only rise above the certified one); ``recertify``
  waits for ``recertify_labels`` labelled decisions (accepted-error, joint) or ``recertify_decisions``
  decisions (rate, cost) logged *after* the alarm, re-tunes on them (:func:`policies.watch.recertify`),
  records the new certificate in the log and swaps the rule; the old id stays on the old decisions.
* While an alarm stands the certificate is in doubt: leases say ``covered: False`` (verdicts
  ``certified: false``) and ``GET /v1/budget`` says why.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cascade.config import CascadeConfig
from cascade.decision_log import Decision, DecisionLog, Labelled
from deployments.served import ServedPolicy, tenant_config
from policies.certificate import Certificate
from policies.leases import BudgetLedger
from policies.watch import CertificateWatch, Observation, accepted_wrong, certificate_id, recertify

LABEL_MARGIN_S = 60.0
"""Labels are re-read this far back (another replica's feedback may commit out of order)."""


@dataclass
class Reading:
    """One pass over the log: new decisions, new labels, and the time read up to."""

    decisions: list[Decision] = field(default_factory=list)
    labelled: list[Labelled] = field(default_factory=list)
    until: float = 0.0


class CertificateKeeper:
    """The current certificate, its monitors and the action on alarm (see the module docstring)."""

    def __init__(self, config: CascadeConfig, served: ServedPolicy, log: DecisionLog, reference: np.ndarray,
                 snapshot: dict[str, Any] | None = None, clock: Any = time.time) -> None:
        self.config, self.served, self.log, self._clock = config, served, log, clock
        self.settings = config.serve.monitor
        self.history: list[dict[str, Any]] = []
        certificate, threshold = served.certificate, served.threshold
        if snapshot is not None:
            certificate, threshold = snapshot["certificate"], float(snapshot["threshold"])
            reference = np.asarray(snapshot["reference"], dtype=float)
            self.history = list(snapshot.get("history", []))
        self._fallback_installed = bool(snapshot and snapshot.get("fallback"))
        self._start(certificate, threshold, reference, reason="artifact" if snapshot is None else "resumed")

    def _start(self, certificate: dict[str, Any] | None, threshold: float, reference: np.ndarray, reason: str) -> None:
        self.certificate, self.threshold, self.reference = certificate, float(threshold), reference
        self.certificate_id = certificate_id(certificate)
        self.watch = None if certificate is None else CertificateWatch(
            Certificate.model_validate(certificate), reference, self.settings.delta, self.settings.jump,
            max_cost=self._max_cost(), seed=int(self.certificate_id[2:10], 16))
        self._after: float | None = None  # decisions read up to this time (None: replay from the start)
        self._label_cursor: float | None = None
        self._label_seen: dict[str, float] = {}
        self._fresh_decisions: list[Decision] = []
        self._fresh_labelled: list[Labelled] = []
        self._attempted_at = 0
        self.status, self.message = ("watching", "") if self.watch is not None else ("unwatched", "no certificate")
        if certificate is not None:
            self.log.record_certificate(self.certificate_id, certificate, reason)  # type: ignore[arg-type]

    def _max_cost(self) -> float | None:
        if self.config.budget.kind != "cost":
            return None
        from policies.tuners.factory import max_cost_per_call

        return self.config.cost.small_per_call + max_cost_per_call(self.config.budget, self.config.cost,
                                                                   self.config.expert.max_model_len)

    # -- reading (in a thread) ---------------------------------------------------------------------

    def read(self) -> Reading:
        """New decisions and labels for the current certificate (database reads only)."""
        if self.watch is None:
            return Reading(until=self._clock())
        until = self._clock() - self.settings.settle_s
        decisions = self.log.decisions(after=self._after, until=until, certificate_id=self.certificate_id)
        since = None if self._label_cursor is None else self._label_cursor - LABEL_MARGIN_S
        labelled = [item for item in self.log.labelled(since=since, certificate_id=self.certificate_id)
                    if item.decision.id not in self._label_seen]
        return Reading(decisions, labelled, until)

    # -- acting (on the holder's event loop) -------------------------------------------------------

    def apply(self, reading: Reading, ledger: Any) -> list[dict[str, Any]]:
        """Feed the monitors, act on a new alarm, maybe swap the rule; return the events to log."""
        if self.watch is None:
            return []
        self._after = max(self._after or -np.inf, reading.until)
        for item in reading.labelled:
            self._label_seen[item.decision.id] = item.received
            self._label_cursor = max(self._label_cursor or -np.inf, item.received)
        if self._label_cursor is not None:
            self._label_seen = {k: v for k, v in self._label_seen.items() if v > self._label_cursor - LABEL_MARGIN_S}
        now = self._clock()
        observations = [Observation(d.deferral_score, d.deferred, d.cost) for d in reading.decisions]
        observations += [Observation(x.decision.deferral_score, x.decision.deferred, x.decision.cost, labelled=True,
                                     accepted_wrong=accepted_wrong(x.decision.label, x.true_label, x.decision.deferred))
                         for x in reading.labelled]
        events = [self._event("monitor_alarm", monitor=name, **self.watch.state()[name])
                  for name in self.watch.observe(observations, now=now)]
        if self.watch.alarm_:
            alarm_time = self.watch.alarm_time_ or now
            self._fresh_decisions += [d for d in reading.decisions if d.time > alarm_time]
            self._fresh_labelled += [x for x in reading.labelled if x.decision.time > alarm_time]
            events += self._act(ledger)
        return events

    def _act(self, ledger: Any) -> list[dict[str, Any]]:
        action, monitor = self.settings.action, self.watch.alarm_monitor_  # type: ignore[union-attr]
        if action == "alert":
            self.status, self.message = "alarm", f"{monitor} alarm: still serving the rule, outside the certificate"
            return []
        if not self._fallback_installed:
            try:
                for tenant, member in _members(ledger):
                    _install(member, self._fallback_controller(tenant_config(self.config, tenant)),
                             self.config.budget.kind == "rate")
            except ValueError as exc:  # say so, keep serving the rule: the alarm stands either way
                self.status, self.message = "alarm", f"{monitor} alarm; the fallback rule could not be served: {exc}"
                return [self._event("action_failed", reason=str(exc))]
            self._fallback_installed = True
        if action == "fallback":
            self.status, self.message = "fallback", f"{monitor} alarm: serving the most conservative certified rule"
            return []
        self.status = "recertifying"
        return self._maybe_recertify(ledger)

    def _maybe_recertify(self, ledger: Any) -> list[dict[str, Any]]:
        by_labels = self.config.budget.kind in ("accepted-error", "joint")
        have = len(self._fresh_labelled) if by_labels else len(self._fresh_decisions)
        need = self.settings.recertify_labels if by_labels else self.settings.recertify_decisions
        self.message = (f"{self.watch.alarm_monitor_} alarm: serving the most conservative certified rule; "  # type: ignore[union-attr]
                        f"re-certifying once {need} fresh {'labelled ' if by_labels else ''}decisions are logged "
                        f"({have} so far)")
        if have < need or have < self._attempted_at + need:
            return []
        self._attempted_at = have
        try:
            certificate = recertify(self.config.budget, self.config.cost, self.config.expert.max_model_len,
                                    self.served.label_names, self._fresh_labelled, self._fresh_decisions)
        except ValueError as exc:  # InfeasibleTarget too
            self.status, self.message = "recertify-failed", f"re-certifying on {have} fresh decisions failed: {exc}"
            return [self._event("recertify_failed", reason=str(exc), fresh=have)]
        reference = (np.array([x.decision.deferral_score for x in self._fresh_labelled]) if by_labels
                     else np.array([d.deferral_score for d in self._fresh_decisions]))
        old = self.certificate_id
        body = certificate.model_dump(mode="json")
        self.history.append({"certificate_id": old, "replaced_at": self._clock(), "by": certificate_id(body),
                             "monitor": self.watch.alarm_monitor_})  # type: ignore[union-attr]
        self._fallback_installed = False
        self._start(body, certificate.threshold, reference, reason=f"recertified after a monitor alarm on {old}")
        for tenant, member in _members(ledger):
            _install(member, self._controller(tenant_config(self.config, tenant), certificate.threshold, body),
                     self.config.budget.kind == "rate")
        return [self._event("recertified", replaced=old, threshold=certificate.threshold, fresh=have,
                            bound=certificate.bound, n=certificate.n)]

    def _controller(self, config: CascadeConfig, threshold: float, certificate: dict[str, Any] | None) -> Any:
        return dataclasses.replace(self.served, threshold=float(threshold), certificate=certificate).controller(config)

    def _fallback_controller(self, config: CascadeConfig) -> Any:
        budget = config.budget
        if budget.kind in ("accepted-error", "joint"):  # the passed rule that defers most: lowest threshold, then tie cut
            rules = (self.certificate or {}).get("passed_rules") or [(self.threshold, 1.0)]
            threshold, tie_break = min((float(t), float(b)) for t, b in rules)
            pinned = config.model_copy(update={"budget": budget.model_copy(update={"served_rule": "certified"})})
            return self._controller(pinned, threshold, {**(self.certificate or {}), "tie_break": tie_break})
        controller = self._controller(config, self.threshold, self.certificate)
        controller.min_threshold, controller.adapt = self.threshold, True  # only rise: defer less, hold the target
        return controller

    # -- what the holder reports ---------------------------------------------------------------------

    @property
    def in_doubt(self) -> bool:
        """An alarm stands for the served certificate: answers are outside it."""
        return self.watch is not None and self.watch.alarm_

    def lease_info(self) -> dict[str, Any]:
        """What every router replica learns with its lease: the certificate id and the watch's status."""
        return {"certificate_id": self.certificate_id, "watch_status": self.status}

    def state(self) -> dict[str, Any]:
        """For ``GET /v1/budget`` and metrics: status, message, δ, action, the monitors, the certificates."""
        return {"status": self.status, "message": self.message, "delta": self.settings.delta,
                "action": self.settings.action, "certificate_id": self.certificate_id,
                "certificate": self.certificate, "threshold": self.threshold,
                "monitors": self.watch.state() if self.watch is not None else {}, "replaced": list(self.history)}

    def snapshot(self) -> dict[str, Any]:
        """The served certificate and rule, JSON-ready (the monitors are rebuilt from the log)."""
        return {"certificate": self.certificate, "threshold": self.threshold, "reference": self.reference.tolist(),
                "history": self.history, "fallback": self._fallback_installed}

    def _event(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"event": event, "certificate_id": self.certificate_id, "action": self.settings.action,
                "time": self._clock(), **fields}


def _members(ledgers: Any) -> list[tuple[str | None, BudgetLedger]]:
    """The (tenant, ledger) pairs of a :class:`~policies.tenants.TenantLedgers`, or one ledger alone."""
    return list(ledgers.members()) if hasattr(ledgers, "members") else [(None, ledgers)]


def _install(ledger: BudgetLedger, controller: Any, keep_target: bool) -> None:
    """Serve ``controller``'s rule from the next exchange on, keeping the window the hard cap counts
    over (a swap must not open room the cap has not freed) and a target set at run time."""
    old = ledger.controller
    if controller.window == old.window:
        for name in ("_history", "_forced_history", "_cursor", "_decisions", "_in_window", "_forced_in_window",
                     "_forced_total"):
            setattr(controller, name, getattr(old, name))
    if keep_target:  # a rate budget's target (PUT /v1/budget); other budgets hold the new rule's own rate
        try:
            controller.set_target(old.target)
        except ValueError:
            pass
    ledger.controller = controller
