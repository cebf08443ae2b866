"""The overload benchmark's bookkeeping: outcomes of a response, percentiles, counting 503s and lost
requests, verdict shares, the capacity estimate, queue bounds from capacity, the claim, the report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from experiments.benchmarks.bench_overload import (
    app_after,
    capacity_estimate,
    claim,
    conclusion,
    count_outcomes,
    deadline_from,
    expert_of_deferred,
    load_table,
    markdown,
    outcome_of,
    past_saturation,
    payloads_of,
    percentiles,
    saturating_clients,
    summarise_load,
    verdict_shares,
)


def _verdict(source: str = "small", reason: str | None = None, total_ms: float = 20.0,
             expert_ms: float | None = None) -> dict[str, Any]:
    timings = {"small": 1.0, **({"expert": expert_ms} if expert_ms is not None else {}), "total": total_ms}
    return {"source": source, "degraded": reason is not None, "degraded_reason": reason, "latency_ms": timings}


def _ok(latency_ms: float, *verdicts: dict[str, Any]) -> Any:
    return outcome_of(latency_ms, 200, {"X-Cascade-Tier": "mixed"}, {"verdicts": list(verdicts)})


def test_a_200_outcome_carries_each_verdicts_source_and_reason_and_the_routers_slowest_time() -> None:
    outcome = _ok(130.0, _verdict("small", total_ms=40.0), _verdict("expert", total_ms=120.0, expert_ms=95.0),
                  _verdict("small", "deadline", total_ms=118.0, expert_ms=110.0))
    assert outcome.sources == ("small", "expert", "small")
    assert outcome.reasons == (None, None, "deadline")
    assert outcome.router_ms == 120.0
    assert outcome.expert_ms == 95.0  # the expert's answer; the degraded sample's wait is no expert latency
    assert outcome.retry_after is None
    assert not outcome.undegraded
    assert _ok(50.0, _verdict(), _verdict("expert", expert_ms=30.0)).undegraded


def test_a_503_keeps_its_retry_after_whatever_the_headers_case_and_has_no_verdicts() -> None:
    outcome = outcome_of(3.0, 503, {"Retry-After": "1"}, {"verdicts": [_verdict()]})
    assert outcome.retry_after == "1"
    assert outcome.sources == () and outcome.router_ms is None


def test_percentiles_are_numpys_and_the_max_is_the_slowest() -> None:
    values = list(np.arange(1.0, 101.0))
    result = percentiles(values)
    assert result["p50_ms"] == pytest.approx(np.percentile(values, 50))
    assert result["p99_ms"] == pytest.approx(99.01)
    assert result["max_ms"] == 100.0
    assert percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}


def test_every_request_is_counted_once_as_answered_refused_other_or_lost() -> None:
    outcomes = [_ok(10.0, _verdict()), _ok(12.0, _verdict()), outcome_of(2.0, 503, {"retry-after": "1"}),
                outcome_of(2.0, 503, {}), outcome_of(5.0, 500, {}), outcome_of(60_000.0, None)]
    counts = count_outcomes(outcomes)
    assert counts == {"sent": 6, "ok": 2, "rejected_503": 2, "rejected_503_retry_after": 1, "other": 1, "lost": 1}
    assert counts["ok"] + counts["rejected_503"] + counts["other"] + counts["lost"] == counts["sent"]


def test_verdict_shares_are_of_all_answered_samples_by_reason() -> None:
    outcomes = [_ok(10.0, _verdict("expert"), _verdict(), _verdict("small", "deadline"), _verdict()),
                _ok(10.0, _verdict("small", "overloaded"), _verdict(), _verdict(), _verdict("small", "deadline")),
                outcome_of(2.0, 503, {"retry-after": "1"})]
    shares = verdict_shares(outcomes)
    assert shares["samples"] == 8
    assert shares["expert"] == pytest.approx(1 / 8)
    assert shares["degraded"] == pytest.approx(3 / 8)
    assert shares["degraded_by_reason"] == {"deadline": pytest.approx(2 / 8), "overloaded": pytest.approx(1 / 8)}
    assert verdict_shares([outcome_of(2.0, 503, {})])["expert"] is None


def test_a_loads_latency_is_of_its_200s_only_and_its_rate_counts_200s_per_second() -> None:
    outcomes = [_ok(100.0, _verdict()), _ok(300.0, _verdict("small", "deadline")),
                outcome_of(5.0, 503, {"retry-after": "1"}), outcome_of(60_000.0, None)]
    load = summarise_load(outcomes, offered_rps=4.0, elapsed_s=2.0)
    assert load["achieved_rps"] == 1.0
    assert load["goodput_rps"] == 0.5  # the degraded answer is answered, not good
    assert load["share_503"] == 0.25
    assert load["latency"]["max_ms"] == 300.0  # not the lost request's 60 s, not the 503's 5 ms
    assert load["latency_503"]["max_ms"] == 5.0
    assert load["router_latency"]["max_ms"] == 20.0


def test_capacity_is_the_median_of_the_repeats_at_the_fewest_clients_near_the_best_throughput() -> None:
    sweep = {2: 3.0, 4: 5.8, 8: 6.0, 16: 5.9}
    assert saturating_clients(sweep) == 4
    assert saturating_clients(sweep, within=1.0) == 8
    assert not past_saturation(sweep)
    assert past_saturation({**sweep, 32: 2.0})  # the expert pushed past its timeout: stop sweeping
    estimate = capacity_estimate(sweep, [5.5, 6.1, 5.9])
    assert estimate["clients"] == 4
    assert estimate["rps"] == {"median": 5.9, "min": 5.5, "max": 6.1}


def test_the_deadline_is_twice_the_experts_median_rounded_up_to_a_tenth_of_a_second() -> None:
    assert deadline_from(1234.0) == 2500.0
    assert deadline_from(1250.0) == 2500.0
    assert deadline_from(1000.0, factor=3.0) == 3000.0


def test_limits_sized_from_capacity_hold_what_the_app_answers_within_one_deadline() -> None:
    from cascade.config import ServeConfig

    sized = ServeConfig(router_replicas=2).sized_for(capacity_rps=6.3, expert_calls_rps=2.2, deadline_ms=1500.0)
    # ceil(9.45 / 2 replicas), ceil(0.1 * 9.45), ceil(3.3)
    assert (sized.router_max_ongoing_requests, sized.router_max_queued_requests,
            sized.expert_max_queued_requests, sized.deadline_ms) == (5, 1, 4, 1500.0)
    tiny = ServeConfig().sized_for(0.1, 0.01, 100.0)
    assert (tiny.router_max_ongoing_requests, tiny.router_max_queued_requests, tiny.expert_max_queued_requests) == (1, 1, 1)
    with pytest.raises(ValueError, match="positive"):
        ServeConfig().sized_for(0.0, 1.0, 100.0)


def test_the_claim_fails_on_a_slow_p99_a_lost_request_or_nothing_answered() -> None:
    fast = summarise_load([_ok(900.0, _verdict())] * 99 + [_ok(1050.0, _verdict())], 10.0, 10.0)
    assert claim(fast, deadline_ms=1000.0, margin_ms=100.0) == {"p99_within": True, "none_lost": True}
    slow = summarise_load([_ok(900.0, _verdict())] * 90 + [_ok(1500.0, _verdict())] * 10, 10.0, 10.0)
    assert not claim(slow, 1000.0, 100.0)["p99_within"]
    lost = summarise_load([_ok(10.0, _verdict()), outcome_of(60_000.0, None)], 10.0, 10.0)
    assert claim(lost, 1000.0, 100.0) == {"p99_within": True, "none_lost": False}
    refused = summarise_load([outcome_of(3.0, 503, {"retry-after": "1"})], 10.0, 10.0)
    assert not claim(refused, 1000.0, 100.0)["p99_within"]


def test_payloads_are_full_requests_of_distinct_texts_in_a_seeded_order() -> None:
    texts = [f"mail {i}" for i in range(10)]
    payloads = payloads_of(texts, 4, seed=0)
    assert [len(p) for p in payloads] == [4, 4]  # the two left over do not make a request
    assert len({t for p in payloads for t in p}) == 8
    assert payloads == payloads_of(texts, 4, seed=0)
    assert payloads != payloads_of(texts, 4, seed=1)


def _results() -> dict[str, Any]:
    calm = summarise_load([_ok(400.0, _verdict("expert", expert_ms=350.0), _verdict())] * 20, 5.0, 4.0)
    stormy = summarise_load([_ok(2600.0, _verdict(), _verdict("small", "deadline", total_ms=1950.0))] * 18
                            + [outcome_of(4.0, 503, {"retry-after": "1"}), outcome_of(60_000.0, None)], 20.0, 1.0)
    healthy = {"readyz": {"status": "ready", "breaker": "closed"}, "expert_deployment": {"status": "HEALTHY"}}
    restarting = {"readyz": {"status": "degraded", "breaker": "open"},
                  "expert_deployment": {"status": "DeploymentStatus.UNHEALTHY"}}
    runs = [{"factor": 1.0, "repeat": 1, "order": "ascending", **calm, "after": healthy},
            {"factor": 4.0, "repeat": 1, "order": "ascending", **stormy, "after": restarting}]
    for row in runs:
        row["claim"] = claim(row, 2000.0, 200.0)
    return {
        "setup": {"config": "experiments/configs/spamassassin.yaml", "payload_mails": 2, "expert": "vllm tiny, 0-shot",
                  "detector": "tfidf-lr + platt", "budget": "rate, target 0.2", "deadline_ms": 2000.0,
                  "margin_ms": 200.0, "expert_median_ms_at_capacity": 1000.0, "deadline_factor": 2.0,
                  "seconds_per_load": 4.0, "capacity_seconds": 5.0, "load_factors": [1.0, 4.0],
                  "ray": "2.60.0", "ray_num_cpus": 2, "load_average_before": [1.0, 1.0, 1.0],
                  "load_average_after": [2.0, 2.0, 2.0]},
        "capacity": {**capacity_estimate({2: 4.0, 4: 5.0}, [5.0, 4.8, 5.2]), "expert_calls_rps": 1.5,
                     "repeats": [summarise_load([_ok(900.0, _verdict("expert", expert_ms=850.0), _verdict())] * 5,
                                                None, 1.0)]},
        "phases": [{"queues": "config defaults", "router_max_ongoing_requests": 256, "router_max_queued_requests": 512,
                    "expert_slots": 1, "expert_max_queued_requests": 64,
                    "startup_s": 60.0, "runs": runs}],
        "recorded": {"command": "python -m experiments.benchmarks.bench_overload",
                     "cpu": {"model": "Test CPU", "cores": 2}},
    }


def test_the_load_table_has_a_row_per_run_with_its_counts_and_reasons() -> None:
    table = load_table(_results(), 4.0)
    assert len(table) == 3  # header, rule, the one 4x run
    cells = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert cells[4] == "0.0"  # goodput: every answer had a degraded sample
    assert cells[5:10] == ["20", "18", "1 (1)", "0", "1"]  # sent, 200, 503 (with Retry-After), other, lost
    assert cells[12] == "2600"  # p99 of the 200s
    assert cells[-2:] == ["deadline 50.0%", "degraded, breaker open; expert deployment UNHEALTHY"]
    assert load_table(_results(), 2.0)[2:] == []
    calm = [cell.strip() for cell in load_table(_results(), 1.0)[2].strip("|").split("|")]
    assert calm[16:18] == ["350", "50.0%"]  # the expert's median call, its share of the samples


def test_the_conclusion_states_what_held_and_what_did_not() -> None:
    text = conclusion(_results())
    assert text.startswith("1 of 40 requests lost")
    assert "p99 above the deadline + margin (2200 ms) in 1 of 2 runs: 4× (config defaults, run 1: p99 2600 ms)" in text
    assert "1 requests refused with 503 (1 with Retry-After)" in text
    assert "the expert answered 100% of the deferred samples at capacity without a deadline, under the deadline " \
           "1× 100%, 4× 0% (range over runs)" in text
    assert "in 1 of 2 runs the router's p99 came within 10 % of the deadline" in text  # the 4x run's 2600 ms
    assert "not back to ready with a closed breaker after 4× (config defaults, run 1): degraded, breaker open" in text
    assert "on the app that had just served the capacity runs" not in text
    assert "refused the expert up front" not in text  # the 4x run's router waited (1950 ms of a 2000 ms deadline)


def test_deferred_samples_refused_the_expert_at_once_are_told_apart_from_ones_that_waited() -> None:
    results = _results()
    quick = summarise_load([_ok(60.0, _verdict(), _verdict("small", "deadline", total_ms=40.0))] * 10, 5.0, 2.0)
    results["phases"][0]["runs"].append({"factor": 1.0, "repeat": 2, "order": "descending", **quick,
                                         "claim": claim(quick, 2000.0, 200.0)})
    assert "in 1 of 3 runs the expert answered under half the deferred samples while the router's p99 stayed " \
           "under half the deadline" in conclusion(results)


def test_the_experts_share_of_the_deferred_samples_tells_a_shut_out_expert_from_a_busy_one() -> None:
    results = _results()
    calm, stormy = results["phases"][0]["runs"]
    assert expert_of_deferred(calm) == 1.0 and expert_of_deferred(stormy) == 0.0
    nothing_deferred = summarise_load([_ok(30.0, _verdict(), _verdict())] * 5, 5.0, 1.0)
    assert expert_of_deferred(nothing_deferred) is None
    warm = summarise_load([_ok(30.0, _verdict("expert", expert_ms=20.0), _verdict("small", "deadline"))] * 4, 5.0, 1.0)
    assert "; 50% at 1× on the app that had just served the capacity runs" in conclusion(
        {**results, "after_capacity": warm})


def test_app_after_names_an_unhealthy_expert_and_stays_short_when_all_is_well() -> None:
    half_open = {"readyz": {"status": "ready", "breaker": "half_open"},
                 "expert_deployment": {"status": "DeploymentStatus.HEALTHY"}}
    assert app_after({"after": half_open}) == "ready, breaker half_open"
    assert app_after({}) == "no answer, breaker ?; expert deployment ?"


def test_the_report_names_the_command_the_machine_the_capacity_and_a_section_per_load() -> None:
    report = markdown(_results())
    assert "`python -m experiments.benchmarks.bench_overload`" in report and "Test CPU" in report
    assert "**5.00 requests/s** (median of 3 runs at 4 clients, range 4.80–5.20)" in report
    assert "## 1× capacity" in report and "## 4× capacity" in report
    assert report.rstrip().endswith(conclusion(_results()))
    assert "right after its runs without a deadline" not in report  # that section only when it was measured
    results = _results()
    results["capacity"]["repeats"] = [summarise_load([_ok(9000.0, _verdict("expert", expert_ms=8800.0))], None, 1.0)]
    after = markdown({**results, "after_capacity": results["phases"][0]["runs"][1]})
    assert "expert calls of up to 8800 ms" in after
    assert after.count("| 20 | 18 | 1 (1) | 0 | 1 |") == 2  # the 4x row, and the same numbers in that section
