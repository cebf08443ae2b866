"""Watching a served certificate: the monitors per budget, the keeper reading a real decision log, the
actions on alarm (alert, fallback, recertify with a swap), and a restart that replays the log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade.artifact import ArtifactError
from cascade.config import CascadeConfig
from cascade.decision_log import Decision, DecisionLog, Labelled, new_decision_id
from deployments.keeper import CertificateKeeper
from deployments.served import ServedPolicy
from policies import ConfidencePolicy
from policies.certificate import Certificate, InfeasibleTarget
from policies.leases import BudgetLedger
from policies.tuners import budget_grid, make_tuner
from policies.watch import CertificateWatch, Observation, certificate_id, load_reference, recertify, save_reference

LABELS = ("ham", "spam")
ALPHA = 0.1


def config_for(action: str = "alert", **monitor: Any) -> CascadeConfig:
    return CascadeConfig.model_validate({
        "dataset": {"name": "spamassassin"},
        "budget": {"kind": "accepted-error", "target": ALPHA, "delta": 0.1},
        "serve": {"monitor": {"action": action, "settle_s": 0.0, "recertify_labels": 400, **monitor}},
    })


def wrong_chance(scores: np.ndarray, worse: float = 0.0) -> np.ndarray:
    """The small tier errs more where the deferral score is high; ``worse`` adds errors everywhere."""
    return np.clip(0.25 * scores + worse, 0, 1)


def certified(config: CascadeConfig, seed: int = 0, ties: bool = False) -> tuple[ServedPolicy, np.ndarray]:
    """A real accepted-error certificate (Learn-then-Test on 1000 synthetic certify samples); with
    ``ties``, scores on a coarse grid and tie keys, so the passed rules cut ties at many points."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(1000), 1 if ties else 6)
    correct = rng.random(1000) >= wrong_chance(scores)
    keys, fit_keys = (rng.random(1000), rng.random(1000)) if ties else (None, None)
    grid_scores = np.round(rng.random(1000), 1 if ties else 6)
    tuner = make_tuner(config.budget, grid=budget_grid(config.budget, grid_scores, fit_keys))
    tuner.fit(scores, correct.astype(float), tie_keys=keys, tie_seed=1 if ties else None, part="certify")
    served = ServedPolicy(policy=ConfidencePolicy(n_classes=2), threshold=float(tuner.threshold_),
                          certificate=tuner.certificate_.model_dump(mode="json"), label_names=LABELS,
                          modality="text", small_dir=Path("."), reference=scores)
    return served, scores


def served_traffic(rng: np.random.Generator, n: int, threshold: float, cert: str | None, worse: float = 0.0,
                   at: float | None = None) -> tuple[list[Decision], list[str]]:
    """``n`` decisions as the app would log them, and their true labels."""
    scores = np.round(rng.random(n), 6)
    wrong = rng.random(n) < wrong_chance(scores, worse)
    truth = rng.integers(0, 2, n)
    small = np.where(wrong, 1 - truth, truth)
    now = time.time() if at is None else at
    decisions = [Decision(id=new_decision_id(), time=now + 1e-3 * (i + 1), content_hash=str(i),
                          probabilities=(0.8, 0.2) if small[i] == 0 else (0.2, 0.8),
                          deferral_score=float(scores[i]), threshold=threshold, tie_key=None,
                          tier="expert" if scores[i] > threshold else "small",
                          label=LABELS[small[i]] if scores[i] <= threshold else LABELS[truth[i]],
                          deferred=bool(scores[i] > threshold), cost=0.0, degraded=False, forced=False,
                          certified=True, certificate_id=cert, app_version="test", tenant=None)
                 for i in range(n)]
    return decisions, [LABELS[t] for t in truth]


class Clock:
    """The keeper's clock, moved by the test: decisions are logged at it, then it passes them."""

    def __init__(self) -> None:
        self.now = time.time()  # real dates: the log prunes decisions older than its retention

    def __call__(self) -> float:
        return self.now


def serve(log: DecisionLog, keeper: CertificateKeeper, ledger: BudgetLedger, rng: np.random.Generator, n: int,
          worse: float = 0.0) -> list[dict[str, Any]]:
    """Serve ``n`` decisions, label them all, and let the keeper read them once they have settled."""
    clock = keeper._clock
    decisions, truth = served_traffic(rng, n, keeper.threshold, keeper.certificate_id, worse, at=clock.now)
    clock.now += 1e-3 * n + 1.0
    log.record(decisions)
    log.attach_feedback([(d.id, t) for d, t in zip(decisions, truth)], LABELS)
    return keeper.apply(keeper.read(), ledger)


@pytest.fixture
def log(tmp_path: Path) -> Any:
    with DecisionLog(f"sqlite:///{tmp_path / 'decisions.sqlite'}", flush_interval_s=0.05) as opened:
        yield opened


def keeper_for(config: CascadeConfig, log: DecisionLog,
               ties: bool = False) -> tuple[CertificateKeeper, BudgetLedger, ServedPolicy]:
    served, scores = certified(config, ties=ties)
    keeper = CertificateKeeper(config, served, log, scores, clock=Clock())
    return keeper, BudgetLedger(served.controller(config)), served


def test_each_budget_gets_the_monitors_its_certificate_can_be_checked_with_at_an_even_share_of_delta():
    def cert(target: dict[str, float]) -> Certificate:
        return Certificate(kind="joint", method="m", threshold=0.5, target=target, achieved={}, bound=target,
                           guarantee="in expectation", statement="s", n=10, delta=None)

    joint = CertificateWatch(cert({"accepted_error": 0.05, "defer_rate": 0.3}), np.arange(10.0), delta=0.06)
    assert sorted(joint.monitors) == ["accepted_error", "defer_rate", "exchangeability"]
    assert all(m.delta == pytest.approx(0.02) for m in joint.monitors.values())
    costly = CertificateWatch(cert({"cost_per_1k": 400.0}), np.arange(10.0), max_cost=2.0)
    assert costly.monitors["cost_per_request"].alpha == pytest.approx(0.4)
    with pytest.raises(ValueError, match="max_cost"):
        CertificateWatch(cert({"cost_per_1k": 400.0}), np.arange(10.0))


def test_label_free_monitors_alarm_on_a_rate_rise_and_a_score_shift_not_on_the_certified_stream():
    rng = np.random.default_rng(3)
    target = {"defer_rate": 0.2}
    cert = Certificate(kind="rate", method="m", threshold=0.8, target=target, achieved={}, bound=target,
                       guarantee="in expectation", statement="s", n=2000, delta=None)
    watch = CertificateWatch(cert, rng.random(2000), delta=0.05, seed=1)
    null = rng.random(3000)
    assert watch.observe([Observation(s, s > 0.8, 0.0) for s in null]) == [] and not watch.alarm_
    shifted = rng.random(3000) ** 0.5  # higher scores: more deferrals (0.36 above 0.8) and a new distribution
    raised = watch.observe([Observation(s, s > 0.8, 0.0) for s in shifted], now=123.0)
    assert set(raised) == {"defer_rate", "exchangeability"} and watch.alarm_time_ == 123.0
    assert watch.state()["defer_rate"]["mean"] == pytest.approx(np.mean(np.r_[null, shifted] > 0.8))


def test_no_alarm_while_served_traffic_is_like_the_certify_part(log):
    config = config_for()
    keeper, ledger, _ = keeper_for(config, log)
    rng = np.random.default_rng(1)
    for _ in range(4):
        assert serve(log, keeper, ledger, rng, 500) == []
    state = keeper.state()
    assert state["status"] == "watching" and not keeper.in_doubt
    assert state["monitors"]["exchangeability"]["n"] == 2000
    accepted = [x for x in log.labelled() if not x.decision.deferred]
    assert state["monitors"]["accepted_error"]["n"] == len(accepted) > 0


def test_alert_reports_the_alarm_and_leaves_the_rule(log):
    config = config_for("alert")
    keeper, ledger, served = keeper_for(config, log)
    rng = np.random.default_rng(2)
    events = serve(log, keeper, ledger, rng, 1500, worse=0.3)
    assert [e["event"] for e in events] == ["monitor_alarm"] and events[0]["monitor"] == "accepted_error"
    assert events[0]["evidence"] >= events[0]["alarm_at_evidence"] == pytest.approx(len(keeper.watch.monitors) / 0.05)
    assert keeper.in_doubt and keeper.state()["status"] == "alarm"
    assert ledger.controller.threshold == served.threshold


def test_fallback_serves_the_lowest_threshold_rule_that_passed(log):
    config = config_for("fallback")
    keeper, ledger, served = keeper_for(config, log, ties=True)
    assert len({b for _, b in served.certificate["passed_rules"]}) > 1  # rules cut ties at several points
    serve(log, keeper, ledger, np.random.default_rng(2), 1500, worse=0.3)
    lowest, cut = min((t, b) for t, b in served.certificate["passed_rules"])
    assert keeper.state()["status"] == "fallback"
    assert ledger.controller.threshold == lowest < served.threshold and not ledger.controller.adapt
    assert ledger.controller.tie_break == cut and ledger.controller.covers_rule()


def test_recertify_waits_for_fresh_labels_then_swaps_the_rule_and_keeps_the_old_certificate(log):
    config = config_for("recertify")
    keeper, ledger, served = keeper_for(config, log)
    rng = np.random.default_rng(4)
    serve(log, keeper, ledger, rng, 1500, worse=0.3)
    old = keeper.certificate_id
    assert keeper.state()["status"] == "recertifying" and "0 so far" in keeper.state()["message"]
    events = serve(log, keeper, ledger, rng, 1000)  # after the alarm: fresh labelled decisions, drift over
    assert [e["event"] for e in events] == ["recertified"] and events[0]["replaced"] == old
    assert keeper.certificate_id != old and keeper.state()["status"] == "watching" and not keeper.in_doubt
    new = Certificate.model_validate(keeper.certificate)
    assert new.part == "feedback" and new.n == 1000 and new.bound["accepted_error"] <= ALPHA
    assert ledger.controller.threshold == new.threshold == keeper.threshold
    assert [c["id"] for c in log.certificates()] == [old, keeper.certificate_id]
    assert keeper.state()["replaced"][0]["certificate_id"] == old
    assert keeper.watch.monitors["accepted_error"].n_ == 0  # the new certificate is watched afresh


def test_a_restarted_keeper_replays_the_log_to_the_same_evidence(log):
    config = config_for("alert")
    keeper, ledger, served = keeper_for(config, log)
    rng = np.random.default_rng(5)
    for _ in range(3):
        serve(log, keeper, ledger, rng, 400, worse=0.1)
    restarted = CertificateKeeper(config, served, log, served.reference, snapshot=keeper.snapshot(),
                                  clock=keeper._clock)
    restarted.apply(restarted.read(), ledger)
    for name, monitor in keeper.state()["monitors"].items():
        again = restarted.state()["monitors"][name]
        assert (again["n"], again["alarm"]) == (monitor["n"], monitor["alarm"])
        assert again["evidence"] == pytest.approx(monitor["evidence"], rel=1e-9)


def test_recertify_needs_labels_and_a_feasible_target():
    config = config_for()
    rng = np.random.default_rng(6)
    decisions, truth = served_traffic(rng, 30, 0.5, "c", worse=0.6)
    with pytest.raises(ValueError, match="labelled"):
        recertify(config.budget, config.cost, None, LABELS, [], decisions)
    labelled = [Labelled(d, t, 0.0) for d, t in zip(decisions, truth)]
    with pytest.raises(InfeasibleTarget):
        recertify(config.budget, config.cost, None, LABELS, labelled, decisions)
    rate = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"},
                                         "budget": {"kind": "rate", "target": 0.2, "delta": 0.1}})
    fresh, _ = served_traffic(rng, 2000, 0.5, "c")
    cert = recertify(rate.budget, rate.cost, None, LABELS, [], fresh)
    realised = np.mean([d.deferral_score > cert.threshold for d in fresh])
    assert cert.part == "feedback" and realised <= 0.2


def test_the_reference_is_saved_checksummed_and_a_damaged_one_fails_at_load(tmp_path):
    save_reference(np.array([0.1, 0.5, 0.9]), tmp_path / "ref")
    np.testing.assert_array_equal(load_reference(tmp_path / "ref"), [0.1, 0.5, 0.9])
    (tmp_path / "ref" / "reference.json").write_text((tmp_path / "ref" / "reference.json").read_text()[:-5])
    with pytest.raises(ArtifactError, match="reference"):
        load_reference(tmp_path / "ref")
    with pytest.raises(ArtifactError, match="cascade tune"):
        load_reference(tmp_path / "absent")
    assert certificate_id(None) is None and certificate_id({"a": 1}) == certificate_id({"a": 1}) != certificate_id({})
