"""Reliability diagrams as PNG files (matplotlib, no display needed).

>>> plot_reliability(probs, y, "reliability.png")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cascade.calibration.metrics import N_BINS, reliability


def plot_reliability(probs: np.ndarray, y: np.ndarray, path: str | Path, title: str = "Reliability",
                     raw_probs: np.ndarray | None = None, n_bins: int = N_BINS) -> Path:
    """Accuracy against confidence per bin, with the diagonal; ``raw_probs`` adds the uncalibrated curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    series = [("calibrated", probs)] if raw_probs is None else [("uncalibrated", raw_probs), ("calibrated", probs)]
    for name, values in series:
        bins = reliability(values, y, n_bins)
        used = bins.count > 0
        ax.plot(bins.confidence[used], bins.accuracy[used], marker="o", label=f"{name} (ECE {bins.gap:.3f})")
    ax.set(xlabel="confidence (top-label probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
