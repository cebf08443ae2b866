"""The markdown report of one experiment (every number also sits in results.json)."""

from __future__ import annotations

import math
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cache_note(results: dict[str, Any]) -> str:
    cached = [tier for tier, hit in results.get("expert_scores_from_cache", {}).items() if hit]
    return f" (scores of {', '.join(cached)} read from the cache, not recomputed)" if cached else ""


def tier_table(results: dict[str, Any]) -> str:
    lines = ["| tier | accuracy | F1 | AUROC | ECE | cost / 1k | latency ms |", "|---|---|---|---|---|---|---|"]
    for tier, row in results["tiers"].items():
        lines.append(f"| {tier} | {_fmt(row['accuracy'])} | {_fmt(row['f1'])} | {_fmt(row.get('auroc'))} | "
                     f"{_fmt(row['ece'])} | {_fmt(row['cost_per_1k'], 2)} | {_fmt(row['mean_latency_ms'], 1)} |")
    return "\n".join(lines)


def frontier_table(results: dict[str, Any], expert: str) -> str:
    """Accuracy at each deferral budget for every policy, plus the curve scalars."""
    block = results["scalars"][expert]
    budgets = list(next(iter(block["policies"].values()))["at_budget"])
    header = "| policy | " + " | ".join(f"acc @ {float(b):.0%}" for b in budgets) + " | AIQ (acc vs cost) | APGR | CPT(50%) |"
    lines = [header, "|" + "---|" * (len(budgets) + 4)]
    for policy, row in block["policies"].items():
        cells = " | ".join(_fmt(row["at_budget"][b]["accuracy"]) for b in budgets)
        lines.append(f"| {policy} | {cells} | {_fmt(row['aiq_accuracy_vs_cost'])} | {_fmt(row['apgr'])} | {_fmt(row['cpt50'])} |")
    if block.get("learned_choice"):
        choice = block["learned_choice"]
        lines.append(f"\nThe `learned` policy serves **{choice['choice']}**: {choice['reason']}.")
    small, alone = results["tiers"]["small"]["accuracy"], results["tiers"][expert]["accuracy"]
    if alone <= small:
        lines.append(f"\nAPGR and CPT are n/a: `{expert}` alone ({alone:.3f}) is no more accurate than the small tier "
                     f"alone ({small:.3f}), so there is no gap between the two to recover. The cascade can still beat "
                     f"both (the two tiers err on different samples): read the accuracy at each budget.")
    for policy, reason in block.get("skipped_policies", {}).items():
        lines.append(f"\n`{policy}` was not run: {reason}.")
    return "\n".join(lines)


def calibration_table(results: dict[str, Any]) -> str:
    """Each expert's calibration: kind, pool, the calls and tokens it spent, test accuracy and ECE before / after."""
    lines = ["| expert | calibrator | judged of pool (leave-one-out) | extra calls | prompt tokens | extra cost | "
             "accuracy before → after | ECE before → after |", "|---|---|---|---|---|---|---|---|"]
    for tier, row in results.get("expert_calibration", {}).items():
        usage, test = row["usage"], row["test"]
        lines.append(f"| {tier} | {row['kind']} | {row['judged']} of {row['pool_size']} | {usage['calls']} | "
                     f"{usage['prompt_tokens']} | {_fmt(usage['cost'], 2)} | {_fmt(test['accuracy_before'])} → {_fmt(test['accuracy_after'])} | "
                     f"{_fmt(test['ece_before'])} → {_fmt(test['ece_after'])} |")
    rows = results.get("expert_calibration", {})
    if rows:
        tier, row = next(iter(rows.items()))
        lines += ["", f"Every calibrator fitted on the same pool scores of `{tier}`, on all {row['test']['samples']} test "
                  f"samples and on the {row['deferred_samples']} the small tier is least sure of (the 20 % Chow's rule "
                  "hands over, where the expert's answers count):", "",
                  "| calibrator | accuracy | ECE | accuracy where deferred |", "|---|---|---|---|"]
        for kind, cells in row["compared"].items():
            lines.append(f"| {kind} | {_fmt(cells['accuracy'])} | {_fmt(cells['ece'])} | "
                         f"{_fmt(cells['accuracy_deferred'])} |")
    return "\n".join(lines)


def adherence_table(results: dict[str, Any]) -> str:
    lines = ["| tuner | metric | target | guarantee | mean realised (95% CI) | violation rate | refused |",
             "|---|---|---|---|---|---|---|"]
    for row in results["budget_adherence"]:
        lines.append(
            f"| {row['tuner']} | {row['metric']} | {row['target']:g} | {row['guarantee']} | {row['mean']:.3f} "
            f"({row['ci_low']:.3f}–{row['ci_high']:.3f}) | {row['violation_rate']:.3f} | {row['refusal_rate']:.2f} |"
        )
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    evaluated = results["evaluated"]
    parts = [
        f"# Experiment `{results['name']}`",
        f"Held-out samples scored by every tier: {evaluated['fit']} fit (calibrator and policies), "
        f"{evaluated['certify']} certify (budget tuners), {evaluated['test']} test (reported only). "
        f"Total time {results['timing_s']['total']:.0f} s{_cache_note(results)}.",
        "## Each tier alone (test)", tier_table(results),
    ]
    if results.get("expert_calibration"):
        parts += ["Expert probabilities are calibrated on the labelled pool, each sample judged with its own label "
                  "out of retrieval; the fit, certify and test parts are never read. The table above and everything "
                  "below use the calibrated experts. Before and after on the test part:", calibration_table(results)]
    if results.get("crossfit"):
        crossfit = results["crossfit"]
        spent = "; ".join(f"`{name}` {u['calls']} calls, {u['prompt_tokens']} prompt + {u['completion_tokens']} "
                          f"completion tokens, cost {u['cost']:.2f}" for name, u in crossfit["expert_usage"].items())
        parts.append(f"The learned policy also fits on {crossfit['samples']} cross-fitted training samples "
                     f"({crossfit['folds']} folds); the extra expert calls: {spent}.")
    for expert in results["scalars"]:
        parts += [f"## Cascade with `{expert}` (accuracy on test at each deferral budget)", frontier_table(results, expert)]
    parts += ["![frontier vs deferral rate](frontier_defer.png)", "![frontier vs cost](frontier_cost.png)",
              "![reliability of the small tier](reliability.png)"]
    if results["budget_adherence"]:
        rows = results["budget_adherence"]
        certify, test = evaluated["certify"], evaluated["test"]
        parts += ["## Budget adherence over random certify/test splits", adherence_table(results),
                  f"Each of {rows[0]['splits']} splits pools the {certify + test} certify and test samples (the "
                  "calibrator and the policy never saw them), certifies on a random share of "
                  f"{certify} and measures the other {test}. An in-expectation guarantee bounds the *mean* "
                  "realised value, so about half the splits land above a tight target by design. A "
                  "with-probability guarantee bounds the deferral rate on the population the test share is drawn "
                  f"from; the violation rate here counts test shares of only {test} samples whose *measured* "
                  "rate is above target, so their sampling noise adds violations beyond δ. "
                  "`experiments/benchmarks/results/policies.md` "
                  "checks the same tuners with large test parts and states the slack.",
                  "![budget adherence](budget_adherence.png)"]
    return "\n\n".join(parts) + "\n"
