"""The app on a real two-node Ray cluster on this machine, and the loss of the expert's node under load.

A head node (``head_node`` resource: routers, budget holder, Serve's controller and proxy) and a worker
node (``expert_node``: the knn-vote expert), each its own ``ray start`` with its own ports and temp dir,
so another Ray instance on the machine is never touched (:mod:`experiments.benchmarks.cluster`). Clients
send a mix of confident and uncertain mails while every process of the worker node is killed; the worker
is not restarted here (the benchmark does that). The scenario stops every process it started, also on
failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.benchmarks.cluster import scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scenario(Path(tmp_path_factory.mktemp("cluster")), clients=3, before_s=4.0, down_s=20.0, restart=False)


def _nodes(outcome: dict[str, Any], role: str) -> set[str]:
    return {actor["node"] for actor in outcome["placement_before"][role]}


def test_the_expert_runs_on_the_worker_node_and_the_rest_on_the_head(outcome: dict[str, Any]) -> None:
    assert _nodes(outcome, "ExpertServer") == {"worker"}
    for role in ("CascadeRouter", "BudgetHolder", "ServeController", "ProxyActor"):
        assert _nodes(outcome, role) == {"head"}, role
    assert len(outcome["placement_before"]["CascadeRouter"]) == 2


def test_no_request_is_lost_when_the_expert_node_dies_under_load(outcome: dict[str, Any]) -> None:
    totals = outcome["totals"]
    assert totals["sent"] > 0 and totals["lost"] == 0
    assert totals["statuses"] == {"200": totals["sent"]}  # no 5xx either: routers and proxy live on the head


def test_uncertain_mails_get_degraded_small_tier_answers_while_the_expert_is_gone(outcome: dict[str, Any]) -> None:
    before, gone = outcome["phases"]["before the kill"], outcome["phases"]["expert gone"]
    assert before["by_expert"] > 0 and before["degraded"] == 0  # answered before the kill
    assert gone["degraded"] > 0 and gone["degraded"] <= gone["by_small"]  # sent after it


def test_the_budget_keeps_its_count_target_and_holder_across_the_node_loss(outcome: dict[str, Any]) -> None:
    at_kill, after = outcome["budget_at_kill"], outcome["budget_after"]
    assert 0 < at_kill["observed"] <= after["observed"] == outcome["totals"]["ok"]  # every answer counted, once
    assert after["target"] == at_kill["target"] and after["resumed"] is False  # the holder never restarted
    holder = [actor["actor_id"] for actor in outcome["placement_before"]["BudgetHolder"]]
    assert holder == [actor["actor_id"] for actor in outcome["placement_after"]["BudgetHolder"]]


def test_every_process_of_the_cluster_is_gone_after_the_kill_and_the_teardown(outcome: dict[str, Any]) -> None:
    assert outcome["survivors_of_kill"] == []
    assert outcome["teardown"]["leftover"] == []
