"""The monitor benchmark's data model and pure statistics (:mod:`experiments.benchmarks.bench_monitor`):
the scored pool of mails nothing was fitted on, the drift scenarios, the δ split across monitors,
drift weights, delays and binomial intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from policies.ties import defer_mask

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "spamassassin.yaml"
RESULTS = Path(__file__).resolve().parent / "results"
ALPHA = 0.03
DELTA_CERTIFICATE = 0.05
DELTA_MONITOR = 0.05
MONITORS = ("risk", "rate", "exchangeability")
PREFIX = 200
HORIZON = 4000
AFTER = 1000
TUNERS = ("joint", "accepted-error")


@dataclass(frozen=True)
class Pool:
    """Scored mails nothing was fitted on: deferral score, small-tier correctness, tie key and group per mail."""

    scores: np.ndarray
    correct: np.ndarray
    keys: np.ndarray
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def defer(self, requests: np.ndarray, rule: tuple[float, float]) -> np.ndarray:
        """Whether the rule ``(threshold, tie_break)`` defers each of ``requests`` (indices into the pool)."""
        return defer_mask(self.scores[requests], rule[0], rule[1], self.keys[requests])


@dataclass(frozen=True)
class Scenario:
    """Who the rule is certified on and first serves, and what the traffic becomes at the switch."""

    name: str
    description: str
    certify_groups: tuple[str, ...] | None
    """groups of the certified population (None: all)"""
    drift_groups: tuple[str, ...] | None
    """groups the drifted traffic is drawn from, each mail equally likely (None: all)"""
    enrich: str | None = None
    """a group whose share of the drifted traffic is raised to ``share``"""
    share: float = 0.0
    certify_size: int | None = None
    """certify part per stream (None: the config's certify part's size)"""


SCENARIOS = (
    Scenario("hard-ham-arrives", "30 % of the traffic becomes hard-ham-1 (about 4 % in the certified population)",
             None, None, "hard-ham-1", 0.3),
    Scenario("hard-ham-trickles-in", "15 % of the traffic becomes hard-ham-1 (about 4 % in the certified population)",
             None, None, "hard-ham-1", 0.15),
    Scenario("later-collection", "certified on and serving easy-ham-1 + spam-1, then easy-ham-2 + spam-2 arrive",
             ("easy-ham-1", "spam-1"), ("easy-ham-2", "spam-2"), certify_size=600),
)


def split_delta(delta: float, monitors: int) -> float:
    """Each monitor's level so that a false alarm of any of ``monitors`` has probability at most ``delta``
    (Bonferroni: Ville's inequality per monitor, then the union bound).

    >>> round(split_delta(0.05, 3), 4)
    0.0167
    """
    if not 0 < delta < 1 or monitors < 1:
        raise ValueError(f"need 0 < delta < 1 and at least one monitor, got delta={delta}, monitors={monitors}")
    return delta / monitors


def drift_weights(groups: np.ndarray, available: np.ndarray, enrich: str | None = None,
                  share: float = 0.0) -> np.ndarray:
    """Probability of drawing each mail: uniform over ``available`` mails, then ``enrich``'s group raised to
    ``share`` of the draws (its mails stay equally likely among themselves, the others keep their ratios).

    >>> groups = np.array(["a", "a", "b", "b"])
    >>> drift_weights(groups, np.array([True, True, True, False]), "b", 0.5).tolist()
    [0.25, 0.25, 0.5, 0.0]
    """
    available = np.asarray(available, dtype=bool)
    if not available.any():
        raise ValueError("no mail is available to draw from")
    if enrich is None:
        return available / available.sum()
    group = available & (groups == enrich)
    rest = available & ~group
    if not group.any() or not 0 <= share <= 1 or (share < 1 and not rest.any()):
        raise ValueError(f"cannot give group '{enrich}' a share of {share} among the available mails")
    weights = share * group / group.sum()
    return weights + (1 - share) * rest / max(rest.sum(), 1)


def group_shares(groups: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Probability mass per group.

    >>> group_shares(np.array(["a", "b", "b"]), np.array([0.5, 0.25, 0.25]))
    {'a': 0.5, 'b': 0.5}
    """
    return {str(group): float(weights[groups == group].sum()) for group in np.unique(groups)}


def request_of_label(fed: np.ndarray, alarm_at: int | None) -> int | None:
    """The request (1-based) whose label raised an alarm at the ``alarm_at``-th label; ``fed`` are the
    (0-based) positions of the requests whose labels were fed, in order.

    >>> request_of_label(np.array([2, 5, 9]), 2), request_of_label(np.array([2]), None)
    (6, None)
    """
    return None if alarm_at is None else int(fed[alarm_at - 1]) + 1


def delay(alarm_at: int | None, switch: int) -> int | None:
    """Drifted requests (or labels) up to and including the one that raised the alarm, when it came after the
    first ``switch`` ones; None for no alarm, or one before the switch.

    >>> delay(250, 200), delay(200, 200), delay(None, 200)
    (50, None, None)
    """
    return None if alarm_at is None or alarm_at <= switch else alarm_at - switch


def first_alarm(alarms: dict[str, int | None], after: int = 0) -> int | None:
    """The earliest alarm of any monitor later than request ``after`` (None when there is none): a monitor
    that alarmed before the switch stays alarmed, so detection looks past it to the others.

    >>> first_alarm({"risk": 40, "rate": None, "exchangeability": 12}), first_alarm({"risk": None})
    (12, None)
    >>> first_alarm({"risk": 150, "rate": 900, "exchangeability": 260}, after=200)
    260
    """
    return min([at for at in alarms.values() if at is not None and at > after], default=None)


def delay_summary(delays: Sequence[int | None]) -> dict[str, Any]:
    """Detection rate (share of streams with a delay) and the delays' median, quartiles and maximum.

    >>> delay_summary([10, 30, None, 20])["median_delay"], delay_summary([None])["detection_rate"]
    (20.0, 0.0)
    """
    found = np.array([d for d in delays if d is not None], dtype=float)
    quartiles = np.quantile(found, [0.25, 0.5, 0.75]) if len(found) else [None] * 3
    return {"streams": len(delays), "detected": len(found),
            "detection_rate": len(found) / len(delays) if len(delays) else None,
            "median_delay": None if not len(found) else float(quartiles[1]),
            "delay_q25": None if not len(found) else float(quartiles[0]),
            "delay_q75": None if not len(found) else float(quartiles[2]),
            "delay_max": None if not len(found) else float(found.max())}


def population_risk(defer: np.ndarray, correct: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Deferral rate and accepted error of a rule over a population given by per-mail draw probabilities
    (accepted error 0 when nothing is accepted).

    >>> population_risk(np.array([True, False, False]), np.array([True, False, True]), np.array([0.5, 0.25, 0.25]))
    (0.5, 0.5)
    """
    accepted = float(weights[~defer].sum())
    wrong = float(weights[~defer & ~correct].sum())
    return float(weights[defer].sum()), wrong / accepted if accepted > 0 else 0.0


def mean_p_value(reference: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """Expected conformal p-value of a score drawn with ``weights`` against ``reference`` scores: the share of
    the reference above it, ties counted half. 0.5 when both come from one distribution (continuous scores);
    below 0.5 when served scores run higher, which is what the exchangeability monitor bets on.

    >>> mean_p_value(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.5, 10.0]), np.array([0.5, 0.5]))
    0.25
    """
    ordered = np.sort(reference)
    above = len(ordered) - np.searchsorted(ordered, scores, side="right")
    tied = np.searchsorted(ordered, scores, side="right") - np.searchsorted(ordered, scores, side="left")
    return float(weights @ ((above + tied / 2) / len(ordered)))


def rate_interval(count: int, total: int) -> dict[str, Any]:
    """A count as a rate with its exact (Clopper-Pearson) 95 % interval.

    >>> rate_interval(0, 300)["rate"], round(rate_interval(0, 300)["ci95"][1], 4)
    (0.0, 0.0122)
    """
    if not total:
        return {"count": count, "of": total, "rate": None, "ci95": None}
    ci = binomtest(count, total).proportion_ci(0.95)
    return {"count": count, "of": total, "rate": count / total, "ci95": [float(ci.low), float(ci.high)]}
