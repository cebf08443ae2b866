"""Watch a served certificate: the anytime-valid monitors (:mod:`policies.monitors`) fed from the decision log.

A :class:`CertificateWatch` is made for one certificate and the budget it was tuned for. It runs
every monitor that certificate can be checked with, each at ``δ_monitor / (number of monitors)``
so that, while the certificate holds, the chance that *any* of them ever raises a false alarm is at
most ``δ_monitor`` (a union bound over Ville's inequality), however often they are checked:

* ``accepted_error`` (accepted-error, joint): labelled decisions the rule accepted, ``1`` when the
  served (small-tier) label was wrong, against the certified ``α``. It assumes labels come back for
  a subset chosen independently of whether the answer was right;
* ``defer_rate`` (rate, joint): the rule's deferral flag against the certified rate;
* ``cost_per_request`` (cost): what each request cost, in ``[0, small + max expert call]``, against
  the certified mean cost (``cost_per_1k / 1000``);
* ``exchangeability`` (every budget): the served deferral scores against the certify part's
  (a conformal test martingale: no labels needed, so it sees drift first).

:func:`recertify` re-tunes the budget on fresh logged data: labelled decisions for accepted-error
and joint budgets (the small tier's logged probabilities give its correctness at every threshold),
the deferral scores alone for rate and cost budgets (cost at the declared worst case per call).

>>> import numpy as np
>>> from policies.certificate import Certificate
>>> cert = Certificate(kind="rate", method="m", threshold=0.5, target={"defer_rate": 0.2}, achieved={},
...                    bound={"defer_rate": 0.2}, guarantee="in expectation", statement="s", n=500, delta=None)
>>> watch = CertificateWatch(cert, reference=np.random.default_rng(0).random(500), delta=0.05)
>>> sorted(watch.monitors)
['defer_rate', 'exchangeability']
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.certificate import Certificate
from policies.monitors import BoundedMeanMonitor, ExchangeabilityMonitor, RateMonitor

ACTIONS = ("alert", "fallback", "recertify")
MONITOR_REFERENCE_DIR = "monitor_reference"
_REFERENCE_FILE, _REFERENCE_KIND = "reference.json", "cascade-monitor-reference"


def save_reference(scores: np.ndarray, directory: str | Path) -> None:
    """Save the certify part's deferral scores (the exchangeability monitor's reference), checksummed."""
    from cascade.artifact import write_json, write_manifest

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / _REFERENCE_FILE, _REFERENCE_KIND, {"scores": [float(s) for s in np.asarray(scores).reshape(-1)]})
    write_manifest(path, _REFERENCE_KIND)


def load_reference(directory: str | Path) -> np.ndarray:
    """The saved reference scores; a missing or corrupt file raises ``ArtifactError`` naming it."""
    from cascade.artifact import ArtifactError, read_json, verify_manifest

    path = Path(directory)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no monitor reference (the certify part's scores); re-run `cascade tune`")
    verify_manifest(path, _REFERENCE_KIND)
    scores = np.asarray(read_json(path / _REFERENCE_FILE, _REFERENCE_KIND).get("scores", []), dtype=float)
    if not len(scores) or not np.isfinite(scores).all():
        raise ArtifactError(f"{path / _REFERENCE_FILE}: the reference scores are empty or not finite")
    return scores


def certificate_id(certificate: Certificate | dict[str, Any] | None) -> str | None:
    """A short stable id of a certificate (hash of its JSON), stamped on every decision served under it."""
    if certificate is None:
        return None
    body = certificate.model_dump(mode="json") if isinstance(certificate, Certificate) else certificate
    return "c-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Observation:
    """What one monitor reads off one logged decision (see :meth:`CertificateWatch.observe`)."""

    deferral_score: float | None
    deferred: bool
    cost: float
    labelled: bool = False
    """a decision seen again because its true label came back (only the labelled monitors read it)"""
    accepted_wrong: bool | None = None
    """for a labelled decision the rule accepted: whether the served label was wrong (else None)"""


class CertificateWatch:
    """The monitors of one served certificate; ``reference`` are its certify part's deferral scores.

    ``max_cost`` is the most one request can cost (small tier plus the most one expert call can
    cost; cost budgets only). ``seed`` fixes the exchangeability test's tie-breaking (the watch is
    then a pure function of what it reads, so a restarted holder that replays the log agrees).
    """

    def __init__(self, certificate: Certificate, reference: Sequence[float] | np.ndarray, delta: float = 0.05,
                 jump: float = 0.01, max_cost: float | None = None, seed: int = 0) -> None:
        if not 0 < delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {delta}")
        self.certificate = certificate
        self.delta = float(delta)
        target = certificate.target
        names = []
        if "accepted_error" in target:
            names.append("accepted_error")
        if "defer_rate" in target:
            names.append("defer_rate")
        if "cost_per_1k" in target:
            if max_cost is None or not max_cost > 0:
                raise ValueError("a cost certificate is watched with max_cost, the most one request can cost")
            names.append("cost_per_request")
        names.append("exchangeability")
        each = self.delta / len(names)
        self.monitors: dict[str, Any] = {}
        for name in names:
            if name == "accepted_error":
                self.monitors[name] = BoundedMeanMonitor(alpha=target["accepted_error"], delta=each)
            elif name == "defer_rate":
                self.monitors[name] = RateMonitor(beta=target["defer_rate"], delta=each)
            elif name == "cost_per_request":
                bound = min(target["cost_per_1k"] / 1000.0, float(max_cost) * (1 - 1e-9))  # type: ignore[arg-type]
                self.monitors[name] = RateMonitor(beta=bound, delta=each, scale=float(max_cost))  # type: ignore[arg-type]
            else:
                self.monitors[name] = ExchangeabilityMonitor(delta=each, jump=jump, seed=seed).fit(reference)
        self.alarm_time_: float | None = None
        self.alarm_monitor_: str | None = None

    @property
    def alarm_(self) -> bool:
        return any(monitor.alarm_ for monitor in self.monitors.values())

    def observe(self, observations: Sequence[Observation], now: float | None = None) -> list[str]:
        """Feed decisions in logged order, and labelled decisions again (``labelled``, with
        ``accepted_wrong``) as their labels arrive; return the monitors that raised their alarm in this call."""
        if not observations:
            return []
        before = {name for name, monitor in self.monitors.items() if monitor.alarm_}
        for name, monitor in self.monitors.items():
            if name == "accepted_error":
                values = [o.accepted_wrong for o in observations if o.labelled and o.accepted_wrong is not None]
            elif name == "defer_rate":
                values = [o.deferred for o in observations if not o.labelled]
            elif name == "cost_per_request":
                values = [min(max(o.cost, 0.0), monitor.scale) for o in observations if not o.labelled]
            else:
                values = [o.deferral_score for o in observations if not o.labelled and o.deferral_score is not None]
            if values:
                monitor.update(np.asarray(values, dtype=float))
        raised = [name for name, monitor in self.monitors.items() if monitor.alarm_ and name not in before]
        if raised and self.alarm_time_ is None:
            self.alarm_time_, self.alarm_monitor_ = now, raised[0]
        return raised

    def state(self) -> dict[str, dict[str, Any]]:
        """Per monitor: the bound it tests, observations, running mean, evidence, the alarm level, alarm."""
        out: dict[str, dict[str, Any]] = {}
        for name, monitor in self.monitors.items():
            bound = None if name == "exchangeability" else float(monitor.alpha)
            mean = None if name == "exchangeability" or not monitor.n_ else float(monitor.mean_)
            out[name] = {"bound": bound, "n": int(monitor.n_), "mean": mean,
                         "evidence": _finite(monitor.evidence_), "alarm_at_evidence": 1.0 / monitor.delta,
                         "alarm": bool(monitor.alarm_), "alarm_at": monitor.alarm_at_}
        return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1e308


def accepted_wrong(label: str, true_label: str, deferred: bool) -> bool | None:
    """The accepted-error monitor's observation for a labelled decision: wrong or not when the rule
    accepted it (answered by the small tier by choice), ``None`` when the rule deferred it."""
    return None if deferred else label != true_label


def recertify(budget: Any, cost: Any, max_model_len: int | None, label_names: Sequence[str],
              labelled: Sequence[Any], decisions: Sequence[Any]) -> Certificate:
    """A new certificate for ``budget`` on fresh logged data (raises
    :class:`~policies.certificate.InfeasibleTarget` or ``ValueError`` when it cannot).

    ``labelled`` are :class:`~cascade.decision_log.Labelled` decisions (accepted-error, joint): their
    scores and the small tier's correctness (its logged probabilities against the true label) are the
    certify set, and the Learn-then-Test grid is placed on ``decisions`` not among them (no label
    used). Rate and cost budgets certify on the scores of ``decisions`` alone; a cost budget charges
    every deferral the declared worst case per call.
    """
    from policies.tuners import budget_grid, make_tuner

    if budget.kind in ("accepted-error", "joint"):
        if not labelled:
            raise ValueError("re-certifying an accepted-error budget needs labelled decisions; none were logged")
        chosen = {item.decision.id for item in labelled}
        scores = np.array([item.decision.deferral_score for item in labelled], dtype=float)
        names = list(label_names)
        small = [names[int(np.argmax(item.decision.probabilities))] for item in labelled]
        correct = np.array([s == item.true_label for s, item in zip(small, labelled)], dtype=float)
        unlabelled = np.array([d.deferral_score for d in decisions if d.id not in chosen], dtype=float)
        grid = budget_grid(budget, unlabelled if len(unlabelled) else scores)
        tuner = make_tuner(budget, cost, max_model_len, grid)
        tuner.fit(scores, correct, part="feedback")
        return tuner.certificate_
    scores = np.array([d.deferral_score for d in decisions], dtype=float)
    if not len(scores):
        raise ValueError("re-certifying needs logged decisions; none were logged")
    tuner = make_tuner(budget, cost, max_model_len)
    expert_cost = None
    if budget.kind == "cost":
        expert_cost = np.full(len(scores), float(tuner.max_expert_cost))
    tuner.fit(scores, expert_cost=expert_cost, part="feedback")
    return tuner.certificate_
