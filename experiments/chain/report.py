"""The chain experiment's markdown report and plot, written from its ``results.json`` numbers alone."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.plots import _pyplot

PLOT = "chain_frontier.png"


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _rule(rule: list[Any]) -> str:
    return "(" + ", ".join(value if isinstance(value, str) else f"{value:.3g}" for value in rule) + ")"


def markdown_report(results: dict[str, Any]) -> str:
    """``report.md``: tiers alone, the certified rule, each tier's place, the frontier; then the plot."""
    names, gamma = results["tiers"], results["budget"]["max_abstention"] or 0.0
    shares = " | ".join(f"{name}" for name in names)
    evaluated = results["evaluated"]
    lines = [f"# Chain experiment `{results['name']}`", "",
             f"Tiers, cheapest first: {' → '.join(f'`{n}`' for n in names)} → abstain (human review). Held-out samples "
             f"scored by every tier: {evaluated['fit']} fit (grid), {evaluated['certify']} certify (certificate), "
             f"{evaluated['test']} test (reported only); every tier learns from the same {results['expert_pool_size']} "
             f"labelled samples. Deferral score of every tier: 1 - its calibrated top probability. "
             f"Total time {results['timing_s']['total']:.0f} s (scores read from the cache: "
             f"{', '.join(t for t, hit in results['from_cache'].items() if hit) or 'none'}).", "",
             "## Each tier alone (test)", "",
             "| tier | judge | price per call | accuracy | AUROC | ECE | cost / 1k alone |", "|---|---|---|---|---|---|---|"]
    for name in names:
        row = results["tier_details"][name]
        lines.append(f"| {name} | {row['judge']} | {row['price']} | {_f(row['accuracy'])} | {_f(row.get('auroc'))} | "
                     f"{_f(row['ece'])} | {_f(row['cost_per_1k'], 2)} |")
    lines += ["", "## The certified rule", ""]
    certified = results["certified"]
    if certified.get("refused"):
        lines += [f"Refused: {certified['refused']}", ""]
    else:
        certificate = certified["certificate"]
        lines += ["| metric | target | on certify | bound (1-δ) | on test | test within target |", "|---|---|---|---|---|---|"]
        for metric, target in certificate["target"].items():
            realised = certified["test"][metric]
            lines.append(f"| {metric} | {_f(target, 4)} | {_f(certificate['achieved'][metric], 4)} | "
                         f"{_f(certificate['bound'][metric], 4)} | {_f(realised, 4)} | "
                         f"{'yes' if certified['test_within_target'][metric] else 'no'} |")
        test = certified["test"]
        answered = " / ".join(f"{name} {test['share_' + name]:.1%}" for name in names)
        lines += ["", f"Rule {_rule(certified['rule'])} (a threshold per hop, then the abstention threshold). "
                  f"{certificate['statement']} ({certificate['method']}; n = {certificate['n']}, "
                  f"{len(certificate['passed_rules'])} of {results['grid']['rules']} rules passed).", "",
                  f"On test the rule answers {answered} "
                  f"and abstains on {test['abstention_rate']:.1%}; accuracy of answered {test['accuracy']:.3f}. "
                  f"Random routing with the same shares: accuracy {certified['random']['accuracy']:.3f} at "
                  f"{certified['random']['cost_per_1k']:.2f} per 1k.", ""]
    lines += ["## Does each tier earn its place? (test, abstention ≤ "
              f"{gamma:g})", "",
              "| tier dropped | cut | best gain on fit | at cost / 1k | chain accuracy | cut accuracy | gain | "
              f"{int(results['hops'][0]['level'] * 100)}% interval | serves cheaper | earns its place |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for hop in results["hops"]:
        low, high = hop["gain_interval"]
        fit_gain = "n/a" if hop["fit_gain"] is None else f"{hop['fit_gain']:+.3f}"
        lines.append(f"| {hop['tier']} | {' → '.join(hop['cut'])} | {fit_gain} | {_f(hop['cost_per_1k_at'], 2)} | "
                     f"{_f(hop['accuracy'])} | {_f(hop['cut_accuracy'])} | {hop['gain']:+.3f} | "
                     f"{low:+.3f} … {high:+.3f} | {'yes' if hop['reach'] else 'no'} | "
                     f"{'**yes**' if hop['earns_its_place'] else 'no'} |")
    lines += ["", results["verdict"], "",
              f"## Pareto rules (test; cost, error of answered and abstention), abstention ≤ {gamma:g}", "",
              f"| rule | cost / 1k | accuracy | abstention | {shares} | random routing, same shares |",
              "|---|---|---|---|" + "---|" * len(names) + "---|"]
    for row in results["pareto"]:
        if row["abstention_rate"] > gamma + 1e-12:
            continue
        lines.append(f"| {_rule(row['rule'])} | {_f(row['cost_per_1k'], 2)} | {_f(row['accuracy'])} | "
                     f"{_f(row['abstention_rate'])} | " + " | ".join(_f(row[f'share_{n}']) for n in names)
                     + f" | {_f(row['random']['accuracy'])} |")
    oracle = results["oracle"]
    lines += ["", f"Oracle (the cheapest right tier answers; abstain only when none is right): accuracy 1.000, "
              f"abstention {oracle['abstention_rate']:.3f}, {oracle['cost_per_1k']:.2f} per 1k. "
              f"{len(results['pareto'])} Pareto rules of {results['grid']['rules']} in the grid "
              f"({results['grid']['n_per_tier']} thresholds per hop, abstention span "
              f"{results['grid']['abstention_span']:g}).", "", f"![chain frontier]({PLOT})", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Accuracy of answered samples against cost per 1k: the chain and each cut at the abstention bound, random
    routing, the oracle, each tier alone and the certified rule (left); the chain at several abstention bounds
    (right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    gamma = results["budget"]["max_abstention"] or 0.0
    curves = [results["frontiers"][f"{gamma:g}"], *(hop["cut_frontier"] for hop in results["hops"]),
              *results["frontiers"].values()]
    right_edge = max(curve["cost_per_1k"][-1] for curve in curves if curve["cost_per_1k"])

    def step(ax: Any, curve: dict[str, list[float]], style: str, **options: Any) -> None:
        """A staircase held level to the plot's right edge (the best accuracy stays available at higher costs)."""
        if curve["cost_per_1k"]:
            ax.step([*curve["cost_per_1k"], right_edge], [*curve["accuracy"], curve["accuracy"][-1]], style,
                    where="post", **options)

    step(left, curves[0], "-", label=" → ".join(results["tiers"]), lw=1.8)
    for hop in results["hops"]:
        step(left, hop["cut_frontier"], "--", lw=1.2, label=f"without {hop['tier']}")
    pareto = [row for row in results["pareto"] if row["abstention_rate"] <= gamma + 1e-12]
    left.scatter([row["random"]["cost_per_1k"] for row in pareto], [row["random"]["accuracy"] for row in pareto],
                 marker="x", s=18, color="purple", label="random routing, shares of each Pareto rule")
    oracle = results["oracle"]
    left.scatter([oracle["cost_per_1k"]], [oracle["accuracy"]], marker="^", color="black", zorder=5)
    left.annotate(f"oracle (abstains {oracle['abstention_rate']:.1%})", (oracle["cost_per_1k"], 1.0), fontsize=8,
                  xytext=(4, -11), textcoords="offset points")
    for name in results["tiers"]:
        row = results["tier_details"][name]
        left.scatter([row["chain_cost_per_1k"]], [row["accuracy"]], color="grey", s=16, zorder=5)
        left.annotate(f"{name} answers all", (row["chain_cost_per_1k"], row["accuracy"]), fontsize=8, xytext=(4, 4),
                      textcoords="offset points")
    if not results["certified"].get("refused"):
        test = results["certified"]["test"]
        left.scatter([test["cost_per_1k"]], [test["accuracy"]], marker="*", s=140, color="red", zorder=6,
                     label="certified rule (test)")
    left.set_title(f"{results['name']}: abstention ≤ {gamma:g} (test)", fontsize=10)
    for (level, curve), style in zip(results["frontiers"].items(), ("-", "--", "-.", ":", "-")):
        step(right, curve, style, label=f"abstention ≤ {level}", lw=1.5)
    right.set_title("the chain at several abstention bounds (test)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("cost per 1k requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    left.set_ylabel("accuracy of answered samples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
