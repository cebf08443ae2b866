"""PNG plots of a finished experiment (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_STYLE = {"random": ":", "oracle": "--", "upper hull (defer_rate)": "-.", "upper hull (cost_per_1k)": "-."}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frontier(curves: dict[str, dict[str, dict[str, list[float]]]], x: str, path: Path, title: str,
             anchors: dict[str, list[tuple[str, float, float]]]) -> Path:
    """Accuracy against ``x`` (``defer_rate`` or ``cost_per_1k``), one panel per expert.

    ``anchors[expert]`` holds labelled single points (small only, expert only) as (label, x, accuracy).
    """
    plt = _pyplot()
    experts = list(curves)
    fig, axes = plt.subplots(1, len(experts), figsize=(6.5 * len(experts), 4.8), squeeze=False, sharey=True)
    for ax, expert in zip(axes[0], experts):
        for policy, curve in curves[expert].items():
            if x not in curve:  # each upper hull is drawn on its own axis only
                continue
            ax.plot(curve[x], curve["accuracy"], _STYLE.get(policy, "-"), label=policy, linewidth=1.4)
        for label, point_x, accuracy in anchors.get(expert, []):
            ax.scatter([point_x], [accuracy], zorder=5, color="black", s=18)
            ax.annotate(label, (point_x, accuracy), fontsize=8, xytext=(4, -11), textcoords="offset points")
        ax.set_title(f"{title}: expert = {expert}", fontsize=10)
        ax.set_xlabel("deferral rate" if x == "defer_rate" else "cost per 1k requests")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def frontiers(results: dict[str, Any], out: Path) -> list[Path]:
    """``frontier_defer.png`` and ``frontier_cost.png`` of a finished experiment, from its results alone."""
    small_cost = results["tiers"]["small"]["cost_per_1k"]
    by_rate, by_cost = {}, {}
    for expert, row in results["scalars"].items():
        by_rate[expert] = [("small only", 0.0, row["small_accuracy"]), (f"{expert} only", 1.0, row["expert_accuracy"])]
        by_cost[expert] = [("small only", small_cost, row["small_accuracy"]),
                           (f"{expert} only", results["tiers"][expert]["cost_per_1k"] + small_cost, row["expert_accuracy"])]
    return [frontier(results["curves"], "defer_rate", out / "frontier_defer.png", results["name"], by_rate),
            frontier(results["curves"], "cost_per_1k", out / "frontier_cost.png", results["name"], by_cost)]


def budget_adherence(rows: list[dict[str, Any]], path: Path) -> Path:
    """Realised deferral rate on held-out splits against each target (box per target)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    targets = [row["target"] for row in rows]
    ax.boxplot([row["realised"] for row in rows], positions=np.arange(len(rows)), widths=0.5)
    ax.scatter(np.arange(len(rows)), targets, marker="_", s=600, color="red", label="target", zorder=5)
    ax.set_xticks(np.arange(len(rows)), [f"{row['tuner']}\n{row['target']:g}" for row in rows], fontsize=7)
    ax.set_ylabel("realised deferral rate (test half)")
    ax.set_title(f"budget adherence over {len(rows[0]['realised'])} random certify/test splits")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
