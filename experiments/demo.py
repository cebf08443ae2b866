"""`make demo` / `cascade demo`: the whole product on the embedded SpamAssassin default.

fetch data and models -> experiment (score once, sweep, report) -> tune a 20 % deferral budget ->
start the Ray Serve app -> send real test mails through it -> print what happened.

The demo's experiment sweeps the rule policies (and the configured one): with a rule policy and a
rate budget the LLM then scores only the test part; ``cascade experiment run`` also compares the
policies that learn from the expert (which doubles the LLM calls). To stay within about five
minutes on two cores, the LLM scores ``test_mails`` test mails (default 100; the shipped report
scores 600) and judges 100 of its labelled pool mails, leave-one-out, for its calibrator (the
report: 200); ``cascade tune`` reads both from the cache, and 150 mails go through the served app.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from rich.console import Console

from cascade.config import CascadeConfig

DEMO_RATE = 0.2
DEMO_TEST_MAILS = 100
DEMO_CALIBRATION_SAMPLES = 100
RULE_POLICIES = ("confidence", "margin", "entropy")


def demo_settings(config: CascadeConfig, calibration_samples: int = DEMO_CALIBRATION_SAMPLES) -> CascadeConfig:
    """``config`` with each expert's calibrator fitted on at most ``calibration_samples`` pool mails (experiment
    and tune alike, so tune reads the experiment's cached pool scores)."""
    def bounded(expert: Any) -> Any:
        if expert is None or expert.calibration == "none":
            return expert
        current = expert.calibration_samples
        return expert.model_copy(update={"calibration_samples": calibration_samples if current is None
                                         else min(current, calibration_samples)})

    return config.model_copy(update={"expert": bounded(config.expert), "control_expert": bounded(config.control_expert)})


def demo_experiment(config: CascadeConfig, test_mails: int = DEMO_TEST_MAILS) -> CascadeConfig:
    """``config`` sweeping the rule policies (and the configured policy if it learns from the expert), with
    at most ``test_mails`` samples scored per part."""
    from policies.held_out import NEEDS_EXPERT

    policies = [*RULE_POLICIES, *([config.policy.kind] if config.policy.kind in NEEDS_EXPERT else [])]
    cap = config.experiment.max_scored_per_split
    scored = test_mails if cap is None else min(cap, test_mails)
    return config.model_copy(update={"experiment": config.experiment.model_copy(
        update={"policies": policies, "max_scored_per_split": scored})})


def demo(config: CascadeConfig, requests: int = 150, console: Console | None = None,
         test_mails: int = DEMO_TEST_MAILS) -> dict[str, Any]:
    """Run every step, print a summary per step, return the numbers."""
    console = console or Console()
    config = demo_settings(config)
    clock: dict[str, float] = {}

    def step(name: str) -> None:
        clock[name] = time.perf_counter()
        console.rule(f"[bold]{name}")

    start = time.perf_counter()
    step("1/5 fetch data and models")
    from cascade import data, models

    data.fetch(config.dataset.name)
    for name in {config.expert.model, "minilm"} & set(models.MODELS):
        console.print(f"{name}: {models.fetch(name)}")

    step("2/5 experiment: score each tier once, sweep every policy")
    from experiments.console import print_markdown
    from experiments.report import adherence_table, frontier_table, tier_table
    from experiments.run import run_experiment
    from cascade.scoring import progress_to

    with progress_to(console):
        out = run_experiment(demo_experiment(config, test_mails))
    results = json.loads((out / "results.json").read_text())
    print_markdown(console, tier_table(results))
    for tier, row in results.get("expert_calibration", {}).items():
        test = row["test"]
        console.print(f"{tier} calibrated ({row['kind']}, on {row['judged']} of its {row['pool_size']} labelled "
                      "mails judged leave-one-out, "
                      f"{row['usage']['prompt_tokens']} prompt tokens): accuracy {test['accuracy_before']:.3f} → "
                      f"{test['accuracy_after']:.3f}, ECE {test['ece_before']:.3f} → {test['ece_after']:.3f}",
                      highlight=False)
    for expert in results["scalars"]:
        console.print(f"\ncascade with [bold]{expert}[/bold]: test accuracy at each deferral budget")
        print_markdown(console, frontier_table(results, expert))
    print_markdown(console, adherence_table({"budget_adherence": results["budget_adherence"][:4]}))
    console.print(f"report: {out / 'report.md'}\nplots:  {', '.join(str(p) for p in sorted(out.glob('*.png')))}")

    step(f"3/5 tune: at most {DEMO_RATE:.0%} of traffic to the expert")
    from policies.tune import tune

    tuned = config.model_copy(update={"budget": config.budget.as_kind("rate", target=DEMO_RATE)})
    certificate = tune(tuned)
    console.print(f"threshold {certificate['threshold']:.4g}: {certificate['statement']} "
                  f"(certified on the {certificate['part']} part, n={certificate['n']})", markup=False)  # E[...]

    step("4/5 serve: Ray Serve app with the detector, the vLLM expert and the router")
    from ray import serve

    from deployments.app import run

    url = run(tuned)
    console.print(f"serving at {url}")
    try:
        step(f"5/5 traffic: {requests} held-out test mails through {url}/v1/detect")
        traffic = send_test_traffic(tuned, url, requests)
    finally:
        serve.shutdown()
    console.print(
        f"realised deferral rate {traffic['defer_rate']:.1%} (target {DEMO_RATE:.0%}), accuracy "
        f"{traffic['accuracy']:.3f} (small tier alone on the same mails: {traffic['small_only_accuracy']:.3f}; "
        f"the expert fixed {traffic['expert_fixed']} answers and broke {traffic['expert_broke']}), cost "
        f"{traffic['cost_per_1k']:.2f} per 1k requests, degraded {traffic['degraded']}, "
        f"refused {len(traffic['rejected'])}, lost {traffic['lost']}, "
        f"{traffic['throughput_rps']:.1f} req/s"
    )
    total = time.perf_counter() - start
    names = list(clock)
    timings = {name: (clock[names[i + 1]] if i + 1 < len(names) else start + total) - clock[name]
               for i, name in enumerate(names)}
    console.print("time per step: " + ", ".join(f"{n.split(' ', 1)[0]} {t:.0f}s" for n, t in timings.items()) +
                  f"; total {total:.0f}s")
    from experiments.benchmarks.results_io import recorded

    summary = {"traffic": traffic, "certificate": certificate, "timings_s": timings, "total_s": total,
               "test_mails_scored": results["evaluated"]["test"], "expert_calibration": results.get("expert_calibration"),
               "expert_scores_from_cache": results["expert_scores_from_cache"], "results_dir": str(out),
               "recorded": recorded()}
    (out / "demo.json").write_text(json.dumps(summary, indent=1))
    return summary


def send_test_traffic(config: CascadeConfig, url: str, requests: int, concurrency: int = 4,
                      batch: int = 4) -> dict[str, Any]:
    """Send ``requests`` held-out test mails (a seeded uniform draw, :func:`traffic_index`) and score the answers."""
    from cascade.client import CascadeClient, CascadeError
    from cascade.data.roles import load_roles

    test = load_roles(config).test
    index = traffic_index(len(test), requests, config.experiment.seed)
    texts, y = [test.texts[i] for i in index], test.y[index]
    names = list(test.label_names)
    chunks = [list(range(s, min(s + batch, len(texts)))) for s in range(0, len(texts), batch)]

    def send(chunk: list[int]) -> list[tuple[int, Any]]:
        """(index, verdict) per mail; a mail the server refuses (4xx) is counted, not dropped silently."""
        with CascadeClient(url, timeout_s=120.0) as client:
            try:
                return list(zip(chunk, client.detect([texts[i] for i in chunk])))
            except CascadeError as exc:
                if not 400 <= exc.status < 500:
                    raise
                if len(chunk) == 1:
                    rejected.append(f"mail {int(index[chunk[0]])}: {exc}")
                    return []
            return [pair for i in chunk for pair in send([i])]  # find the refused mail(s)

    rejected: list[str] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        pairs = [pair for chunk in pool.map(send, chunks) for pair in chunk]
    elapsed = time.perf_counter() - started
    answered = np.array([i for i, _ in pairs], dtype=int)
    answers = [verdict for _, verdict in pairs]
    labels = np.array([names.index(v.label) for v in answers])
    deferred = np.array([v.source == "expert" for v in answers])
    small_only = small_tier_labels(config, [texts[i] for i in answered])
    truth = y[answered]
    return {
        "requests": len(texts),
        "positive_rate": float(np.mean(y)),
        "answered": len(answers),
        "rejected": rejected,
        "lost": len(texts) - len(answers) - len(rejected),
        "defer_rate": float(deferred.mean()),
        "accuracy": float(np.mean(labels == truth)),
        "small_only_accuracy": float(np.mean(small_only == truth)),
        "expert_fixed": int(np.sum((small_only != truth) & (labels == truth))),
        "expert_broke": int(np.sum((small_only == truth) & (labels != truth))),
        "cost_per_1k": float(1000 * np.mean([v.cost for v in answers])),
        "degraded": int(sum(v.degraded for v in answers)),
        "throughput_rps": len(answers) / elapsed,
    }


def traffic_index(n_test: int, requests: int, seed: int) -> np.ndarray:
    """Which test mails the demo sends: a seeded uniform draw of ``requests`` (in random order), so the
    traffic is exchangeable with the certify part as the certificate assumes. (The split is stored
    by collection: its tail is all spam.)"""
    return np.random.default_rng(seed).permutation(n_test)[:requests]


def small_tier_labels(config: CascadeConfig, texts: list[str]) -> np.ndarray:
    """What the served small tier alone answers for ``texts`` (the baseline the cascade must beat)."""
    from cascade.small import SmallTier
    from deployments.served import load_served

    return SmallTier.load(load_served(config).small_dir).predict_proba(texts).argmax(axis=1)
