"""Served = certified, as properties over random traffic (issue 26): every budget kind, hard caps,
one controller or two leased router replicas, holder restarts. Each answer is either the decision of
a rule the certificate covers, or it says it is not (``covered`` False), and the status agrees."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.leases import BudgetLedger, Lease, LeasedBudget, Report
from policies.online import Decisions, OnlineController, guarantee_now
from policies.ties import defer_mask, tie_keys

SCORE_VALUES = np.round(np.linspace(-1.0, 1.0, 9), 3)   # few values: plenty of ties at every threshold
TIE_SEED = 3


@st.composite
def budgets(draw: Any) -> dict[str, Any]:
    """A budget kind, its certificate (certified rule, passed grid rules) and the serving settings."""
    kind = draw(st.sampled_from(["rate", "cost", "accepted-error", "joint"]))
    thresholds = sorted(draw(st.lists(st.sampled_from(SCORE_VALUES.tolist()), min_size=1, max_size=5, unique=True)))
    cuts = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=len(thresholds),
                         max_size=len(thresholds)))
    rules = list(zip(thresholds, cuts))
    threshold, tie_break = rules[-1]   # Learn-then-Test certifies the passed rule that defers least
    by_rules = kind in ("accepted-error", "joint")
    return {
        "kind": kind, "threshold": threshold, "tie_break": tie_break, "rules": rules if by_rules else None,
        "coverage": "rules" if by_rules else "above",
        "hard_cap": draw(st.sampled_from([None, 0.05, 0.2, 0.5])),
        "adapt": draw(st.booleans()),
        "target": draw(st.sampled_from([0.02, 0.05, 0.2, 0.5])),
        "learning_rate": draw(st.sampled_from([0.001, 0.05, 0.5])),
    }


def make_controller(budget: dict[str, Any]) -> OnlineController:
    target = budget["target"] if budget["hard_cap"] is None else min(budget["target"], budget["hard_cap"])
    return OnlineController(
        target=target, threshold=budget["threshold"], learning_rate=budget["learning_rate"],
        hard_cap=budget["hard_cap"], window=50, tie_break=budget["tie_break"], tie_seed=TIE_SEED,
        min_threshold=budget["threshold"] if budget["kind"] == "cost" else None,
        coverage=budget["coverage"], rules=budget["rules"], adapt=budget["adapt"])


traffic = st.lists(st.lists(st.sampled_from(SCORE_VALUES.tolist()), min_size=1, max_size=30), min_size=1,
                   max_size=25)


def check_batch(budget: dict[str, Any], scores: np.ndarray, texts: list[str], decisions: Decisions) -> None:
    """The property for one batch decided by one rule."""
    keys = tie_keys(texts, TIE_SEED)
    defer, forced, covered = decisions
    assert not (defer & forced).any()
    if budget["hard_cap"] is None:
        assert not forced.any()   # nothing to protect: no replica accepts what the rule defers
    certified_defers = defer_mask(scores, budget["threshold"], budget["tie_break"], keys)
    if budget["coverage"] == "rules":
        # covered answers are one passed rule's decisions, and never a forced acceptance
        assert not (covered & forced).any()
        if covered.any():
            assert any(np.array_equal(defer[covered], defer_mask(scores, t, c, keys)[covered])
                       for t, c in budget["rules"])
    else:
        # covered deferrals are a subset of the certified rule's (rate and cost bounds carry over)
        assert not (covered & defer & ~certified_defers).any()
    if not budget["adapt"]:
        # the certified rule as it is: what it defers is deferred, or forced and flagged
        assert np.array_equal(defer | forced, certified_defers)
        if budget["coverage"] == "rules":
            assert np.array_equal(covered, ~forced)


def check_status(budget: dict[str, Any], state: dict[str, Any], forced_so_far: int) -> None:
    status = guarantee_now(budget["kind"], {"statement": "certificate"}, state)["status"]
    assert state["forced_total"] == forced_so_far
    if budget["coverage"] == "rules":
        assert (status == "overridden") == (state["forced_in_window"] > 0)
        if status == "certified":
            assert (state["threshold"], state["tie_break"]) in {tuple(rule) for rule in budget["rules"]}
    elif status == "certified":
        assert state["forced_in_window"] == 0
        assert (state["threshold"], state["tie_break"]) == (budget["threshold"], budget["tie_break"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=budgets(), batches=traffic)
def test_one_controller_serves_a_covered_rule_or_says_it_does_not(budget, batches):
    controller = make_controller(budget)
    forced_so_far, served = 0, 0
    for batch in batches:
        scores = np.asarray(batch, dtype=float)
        texts = [f"request {served + i}" for i in range(len(scores))]
        served += len(scores)
        decisions = controller.triage(scores, texts)
        check_batch(budget, scores, texts, decisions)
        forced_so_far += int(decisions.forced.sum())
        check_status(budget, controller.state(), forced_so_far)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=budgets(), batches=traffic, replica_picks=st.lists(st.integers(0, 1), min_size=25, max_size=25),
       restarts=st.lists(st.booleans(), min_size=25, max_size=25))
def test_two_leased_replicas_and_holder_restarts_serve_a_covered_rule_or_say_so(budget, batches, replica_picks,
                                                                                 restarts):
    async def run() -> None:
        holder = {"ledger": BudgetLedger(make_controller(budget), lease_deferrals=3)}

        async def exchange(report: Report) -> Lease:
            return holder["ledger"].exchange(report)

        replicas = [LeasedBudget(f"r{i}", exchange, threshold=budget["threshold"], hard_cap=budget["hard_cap"])
                    for i in range(2)]
        for replica in replicas:
            await replica.start()
        forced_so_far, served = 0, 0
        for step, batch in enumerate(batches):
            scores = np.asarray(batch, dtype=float)
            texts = [f"request {served + i}" for i in range(len(scores))]
            served += len(scores)
            decisions = replicas[replica_picks[step]].triage(scores, texts)
            check_batch(budget, scores, texts, decisions)
            forced_so_far += int(decisions.forced.sum())
            await settle()   # every report delivered: the app's state has seen this batch
            if restarts[step]:
                holder["ledger"] = BudgetLedger.restore(holder["ledger"].snapshot(), lease_deferrals=3)
            check_status(budget, holder["ledger"].state(), forced_so_far)

    asyncio.run(run())
