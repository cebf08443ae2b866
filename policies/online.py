"""Online deferral control for serving: the served rule, tracking under drift, a hard cap.

The controller serves a deferral rule (a threshold and a tie cut, :mod:`policies.ties`). With
``adapt`` it moves the rule by quantile tracking, ``λ ← λ + η (wanted − β)``, where ``wanted`` is 1
when the rule defers a request; the fixed point is the threshold whose deferral rate is the target
``β``, so the realised rate follows the target when the score distribution drifts. Without
``adapt`` it serves the certified rule as it is.

*Where the rule may go* is set by what the certificate covers (``coverage``):

* ``"rules"`` (accepted-error, joint: Learn-then-Test): the rule moves only among ``rules``, the
  grid rules that passed (all certified together); tracking snaps to the passed rule with the
  smallest threshold at or above the tracked value;
* ``"above"`` (rate, cost): the certificate bounds what the rule defers, so every higher threshold
  (a subset of the deferrals) is covered too; ``min_threshold`` / ``max_threshold`` clamp the
  tracked threshold (a cost budget: never below the certified threshold);
* ``None``: no certificate.

The hard cap is a sliding-window limit: no ``window`` consecutive requests ever contain more
than ``⌊hard_cap · window⌋`` deferrals. A batch may defer at most that number minus the
deferrals among the previous ``window - 1`` requests, and the allowance goes to its highest
scores; the rest are *forced*: answered by the small tier although the rule defers them. Forced
answers are counted (in total and over the window) and returned per sample, because under a
``"rules"`` certificate they are answers the certificate does not cover. Bookkeeping is ring
buffers with running counts: O(1) amortised per decision, numpy per batch.

Calls are synchronous and never await, so one controller may be shared by every coroutine of a
single asyncio event loop (e.g. a Ray Serve router replica) without locks. It is not meant to be
shared across threads.

>>> import numpy as np
>>> controller = OnlineController(target=0.1, threshold=0.5, hard_cap=0.2, window=100)
>>> decisions = controller.triage(np.random.default_rng(0).random(64))
>>> int(decisions.defer.sum()) <= 20, int(decisions.forced.sum()) > 0
(True, True)
>>> sorted(controller.state())[:3]
['adapt', 'cap_remaining', 'cap_window_deferrals']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from policies.ties import NO_TIE_BREAK, defer_mask, keys_for_ties

Coverage = Literal["rules", "above"]


class Decisions(NamedTuple):
    """Per sample of a batch: sent to the expert; deferred by the rule but answered by the small tier
    (the hard cap or a missing lease allowance: *forced*); and whether the certificate covers the
    decision (the rule served is certified and, under a ``"rules"`` certificate, it was not forced)."""

    defer: np.ndarray
    forced: np.ndarray
    covered: np.ndarray


class OnlineController:
    """Per-batch defer decisions: the served rule, quantile tracking, a sliding-window hard cap.

    ``threshold`` and ``tie_break`` are the certified rule (e.g. a tuner's ``threshold_``; the
    threshold must be finite); ``learning_rate`` is ``η`` in score units per decision;
    ``hard_cap=None`` disables the cap; ``tie_seed`` is the certificate's tie seed. ``coverage``,
    ``rules``, ``min_threshold`` and ``max_threshold`` say where the rule may move (see the module
    docstring); ``adapt=False`` serves the certified rule and never moves it.
    """

    def __init__(
        self,
        target: float,
        threshold: float = 0.0,
        learning_rate: float = 0.05,
        hard_cap: float | None = None,
        window: int = 1000,
        tie_break: float = NO_TIE_BREAK,
        tie_seed: int | None = None,
        min_threshold: float | None = None,
        max_threshold: float | None = None,
        coverage: Coverage | None = None,
        rules: Sequence[tuple[float, float]] | None = None,
        adapt: bool = True,
    ) -> None:
        if not math.isfinite(threshold):
            raise ValueError(f"the starting threshold must be finite, got {threshold}")
        lowest = -math.inf if min_threshold is None else min_threshold
        highest = math.inf if max_threshold is None else max_threshold
        if not lowest <= threshold <= highest:
            raise ValueError(f"the starting threshold {threshold} is outside the clamp [{lowest}, {highest}]")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if hard_cap is not None and not 0 < hard_cap <= 1:
            raise ValueError(f"hard_cap must be in (0, 1], got {hard_cap}")
        if coverage not in (None, "rules", "above"):
            raise ValueError(f"coverage must be 'rules', 'above' or None, got {coverage!r}")
        self.learning_rate = float(learning_rate)
        self.hard_cap = hard_cap
        self.window = int(window)
        self.cap_deferrals = self.window if hard_cap is None else math.floor(hard_cap * self.window + 1e-9)
        self.certified_threshold = float(threshold)
        self.certified_tie_break = float(tie_break)
        self.tie_seed = tie_seed
        self.coverage: Coverage | None = coverage
        self.adapt = bool(adapt)
        self.rules = self._checked_rules(rules) if coverage == "rules" else None
        if self.rules is not None:
            lowest, highest = float(self.rules[0, 0]), float(self.rules[-1, 0])
        self.min_threshold, self.max_threshold = float(lowest), float(highest)
        self._tracked = float(threshold)
        self._threshold, self.tie_break = float(threshold), float(tie_break)
        self._target = 0.0
        self.set_target(target)
        self._history = np.zeros(self.window, dtype=bool)
        self._forced_history = np.zeros(self.window, dtype=bool)
        self._cursor = 0
        self._decisions = 0
        self._in_window = 0
        self._forced_in_window = 0
        self._forced_total = 0

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def target(self) -> float:
        return self._target

    def set_target(self, target: float) -> None:
        """Change the target deferral rate at run time (it must not exceed the hard cap)."""
        if not 0 <= target <= 1:
            raise ValueError(f"target must be in [0, 1], got {target}")
        if self.hard_cap is not None and target > self.hard_cap:
            raise ValueError(f"target {target} exceeds the hard cap {self.hard_cap}")
        self._target = float(target)

    def covers_rule(self) -> bool:
        """Whether the certificate covers the rule served now (before any forced acceptance)."""
        if self.coverage == "rules":
            assert self.rules is not None
            return bool(((self.rules[:, 0] == self._threshold) & (self.rules[:, 1] == self.tie_break)).any())
        if self.coverage == "above":
            return self._threshold > self.certified_threshold or (
                self._threshold == self.certified_threshold and self.tie_break >= self.certified_tie_break)
        return False

    def triage(self, scores: ArrayLike, samples: Sequence[str] | np.ndarray | None = None) -> Decisions:
        """:class:`Decisions` for a batch of deferral scores (in arrival order); updates the state.

        ``samples`` (texts or feature rows, aligned with ``scores``) break ties at the threshold;
        only the tied ones are hashed.
        """
        scores = np.asarray(scores, dtype=float).reshape(-1)
        defer = np.empty(len(scores), dtype=bool)
        forced = np.empty(len(scores), dtype=bool)
        covered = np.empty(len(scores), dtype=bool)
        for start in range(0, len(scores), self.window):
            chunk = scores[start:start + self.window]
            part = slice(start, start + len(chunk))
            wanted = defer_mask(chunk, self._threshold, self.tie_break, self._keys(chunk, samples, start))
            defer[part] = wanted if self.hard_cap is None else capped(chunk, wanted, self._allowance())
            forced[part] = wanted & ~defer[part]
            covered[part] = self.covers_rule()
            if self.coverage == "rules":
                covered[part] &= ~forced[part]
            self._record(defer[part], forced[part])
            self._move(int(np.count_nonzero(wanted)), len(chunk))
        return Decisions(defer, forced, covered)

    def decide(self, scores: ArrayLike, samples: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """The defer mask of :meth:`triage`."""
        return self.triage(scores, samples).defer

    def state(self) -> dict[str, Any]:
        """Target, served rule, realised rate over the window, the cap's state and forced acceptances, JSON-ready."""
        seen = min(self._decisions, self.window)
        return {
            "target": self._target,
            "threshold": self._threshold,
            "tie_break": self.tie_break,
            "realised_rate": self._in_window / seen if seen else 0.0,
            "window": self.window,
            "decisions": self._decisions,
            "window_deferrals": self._in_window,
            "hard_cap": self.hard_cap,
            "cap_window_deferrals": self.cap_deferrals,
            "cap_remaining": self._allowance(),
            "certified_threshold": self.certified_threshold,
            "certified_tie_break": self.certified_tie_break,
            "coverage": self.coverage,
            "adapt": self.adapt,
            "rule_covered": self.covers_rule(),
            "forced_in_window": self._forced_in_window,
            "forced_total": self._forced_total,
        }

    def record(self, deferred: ArrayLike, wanted: int, forced: int = 0) -> None:
        """Account for decisions taken elsewhere with this controller's rule (a router replica holding
        a lease): ``deferred`` in arrival order, ``wanted`` of them deferred by the rule, ``forced`` of
        those answered by the small tier; the window and the rule move as :meth:`triage` would move them."""
        deferred = np.asarray(deferred, dtype=bool).reshape(-1)
        forced_mask = np.zeros(len(deferred), dtype=bool)
        forced_mask[np.flatnonzero(~deferred)[:max(int(forced), 0)]] = True
        for start in range(0, len(deferred), self.window):
            self._record(deferred[start:start + self.window], forced_mask[start:start + self.window])
        self._move(wanted, len(deferred))

    def snapshot(self) -> dict[str, Any]:
        """Settings and state (rule, target, the window's decisions), JSON-ready; see :meth:`restore`."""
        order = (self._cursor + np.arange(self.window)) % self.window  # oldest first
        return {"target": self._target, "threshold": self._threshold, "tie_break": self.tie_break,
                "tracked": self._tracked, "learning_rate": self.learning_rate,
                "hard_cap": self.hard_cap, "window": self.window, "decisions": self._decisions,
                "history": np.flatnonzero(self._history[order]).tolist(),
                "forced_history": np.flatnonzero(self._forced_history[order]).tolist(),
                "forced_total": self._forced_total, "tie_seed": self.tie_seed,
                "certified_threshold": self.certified_threshold, "certified_tie_break": self.certified_tie_break,
                "min_threshold": None if math.isinf(self.min_threshold) else self.min_threshold,
                "max_threshold": None if math.isinf(self.max_threshold) else self.max_threshold,
                "coverage": self.coverage, "adapt": self.adapt,
                "rules": None if self.rules is None else self.rules.tolist()}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> "OnlineController":
        """The controller a :meth:`snapshot` was taken of."""
        controller = cls(target=snapshot["target"], threshold=snapshot["certified_threshold"],
                         learning_rate=snapshot["learning_rate"], hard_cap=snapshot["hard_cap"],
                         window=snapshot["window"], tie_break=snapshot["certified_tie_break"],
                         tie_seed=snapshot["tie_seed"], min_threshold=snapshot["min_threshold"],
                         max_threshold=snapshot["max_threshold"], coverage=snapshot["coverage"],
                         rules=snapshot["rules"], adapt=snapshot["adapt"])
        controller._threshold, controller.tie_break = float(snapshot["threshold"]), float(snapshot["tie_break"])
        controller._tracked = float(snapshot["tracked"])
        controller._history[np.asarray(snapshot["history"], dtype=np.int64)] = True
        controller._forced_history[np.asarray(snapshot["forced_history"], dtype=np.int64)] = True
        controller._in_window = int(controller._history.sum())
        controller._forced_in_window = int(controller._forced_history.sum())
        controller._forced_total = int(snapshot["forced_total"])
        controller._decisions = int(snapshot["decisions"])
        return controller

    def _checked_rules(self, rules: Sequence[tuple[float, float]] | None) -> np.ndarray:
        """The passed rules sorted by what they accept (threshold, then tie cut); the certified rule among them."""
        certified = (self.certified_threshold, self.certified_tie_break)
        table = np.asarray(list(rules) if rules else [certified], dtype=float).reshape(-1, 2)
        if not np.isfinite(table[:, 0]).all():
            table = table[np.isfinite(table[:, 0])]
        if not ((table[:, 0] == certified[0]) & (table[:, 1] == certified[1])).any():
            raise ValueError(f"the certified rule {certified} is not among the passed rules {table.tolist()}")
        return table[np.lexsort((table[:, 1], table[:, 0]))]

    def _move(self, wanted: int, decisions: int) -> None:
        """Quantile tracking: move the tracked threshold, clamp it, and serve the rule it points at."""
        if not self.adapt:
            return
        moved = self._tracked + self.learning_rate * (wanted - self._target * decisions)
        self._tracked = min(max(moved, self.min_threshold), self.max_threshold)
        if self.rules is None:
            self._threshold = self._tracked
            return
        at_or_above = np.flatnonzero(self.rules[:, 0] >= self._tracked)
        row = self.rules[at_or_above[0] if at_or_above.size else -1]
        self._threshold, self.tie_break = float(row[0]), float(row[1])

    def _keys(self, chunk: np.ndarray, samples: Sequence[str] | np.ndarray | None, offset: int) -> np.ndarray | None:
        if samples is None or self.tie_seed is None or self.tie_break >= NO_TIE_BREAK:
            return None
        return keys_for_ties(chunk, self._threshold, samples, self.tie_seed, offset)

    def _allowance(self) -> int:
        """Deferrals the next request may still make: the cap minus those in the last ``window-1``."""
        recent = self._in_window - int(self._history[self._cursor])
        return max(self.cap_deferrals - recent, 0)

    def _record(self, defer: np.ndarray, forced: np.ndarray) -> None:
        slots = (self._cursor + np.arange(len(defer))) % self.window
        self._in_window += int(np.count_nonzero(defer)) - int(np.count_nonzero(self._history[slots]))
        self._forced_in_window += int(np.count_nonzero(forced)) - int(np.count_nonzero(self._forced_history[slots]))
        self._history[slots] = defer
        self._forced_history[slots] = forced
        self._forced_total += int(np.count_nonzero(forced))
        self._cursor = (self._cursor + len(defer)) % self.window
        self._decisions += len(defer)


def capped(scores: np.ndarray, wanted: np.ndarray, allowance: int) -> np.ndarray:
    """``wanted``, or its ``allowance`` highest scores when it holds more."""
    if np.count_nonzero(wanted) <= allowance:
        return wanted
    defer = np.zeros(len(scores), dtype=bool)
    if allowance:
        candidates = np.flatnonzero(wanted)
        defer[candidates[np.argpartition(-scores[candidates], allowance - 1)[:allowance]]] = True
    return defer


def guarantee_now(kind: str, certificate: dict[str, Any] | None, state: dict[str, Any]) -> dict[str, str]:
    """Which guarantee covers what is served now: ``status`` and a sentence.

    * ``certified``: the certified rule, or (accepted-error, joint) another grid rule that passed
      Learn-then-Test with it, and no forced acceptance in the window;
    * ``defers-less`` (rate, cost): a higher threshold, or the hard cap accepting what the rule
      defers; the deferrals are a subset of the certified rule's, so its bound carries over;
    * ``tracking`` (rate): the controller moved below the certified threshold to hold the target
      rate; the certificate does not cover that threshold;
    * ``overridden`` (accepted-error, joint): the hard cap (or a replica without lease allowance)
      made the small tier answer samples the certified rule defers; those answers are outside the
      certificate and flagged ``certified: false``;
    * ``uncertified``: no certificate was served.
    """
    if certificate is None:
        return {"status": "uncertified", "statement": "no certificate: the threshold was not tuned with a guarantee"}
    threshold, certified = float(state["threshold"]), float(state["certified_threshold"])
    statement = str(certificate["statement"])
    forced = int(state.get("forced_in_window", 0))
    served = "serves the certified rule as it is" if not state.get("adapt", True) else "tracks the target"
    tie_break = float(state.get("tie_break", NO_TIE_BREAK))
    certified_tie_break = float(state.get("certified_tie_break", tie_break))
    if kind in ("accepted-error", "joint", "chain"):
        if forced:
            return {"status": "overridden", "statement": (
                f"{forced} of the last {state['window']} requests were answered by the small tier although the "
                f"certified rule defers them (hard cap or missing lease allowance); those answers are outside the "
                f"certificate ({statement}) and flagged certified: false")}
        on_grid = state["rule_covered"] if state.get("coverage") == "rules" else (
            threshold == certified and tie_break == certified_tie_break)
        if not on_grid:
            return {"status": "uncertified", "statement": f"threshold {threshold:.4g} is not a rule the certificate "
                                                          f"covers ({statement})"}
        which = "the certified rule" if threshold == certified else \
            f"threshold {threshold:.4g}, a grid rule that passed Learn-then-Test with the certified {certified:.4g}"
        return {"status": "certified", "statement": f"{statement}; serving {which} (the controller {served})"}
    if threshold < certified or (threshold == certified and tie_break < certified_tie_break):
        return {"status": "tracking", "statement": f"the certificate covers threshold {certified:.4g} and above, not "
                                                   f"the current {threshold:.4g}: the controller holds the realised "
                                                   f"deferral rate at {state['target']:.4g} over the last "
                                                   f"{state['window']} requests"}
    if threshold > certified or tie_break > certified_tie_break or forced:
        why = f"threshold {threshold:.4g} > {certified:.4g}" if threshold > certified else \
            f"the hard cap accepted {forced} of the last {state['window']} requests the rule defers"
        return {"status": "defers-less", "statement": f"{statement} (the served rule defers a subset of the certified "
                                                      f"rule's requests: {why}; the controller {served})"}
    return {"status": "certified", "statement": f"{statement} (the controller {served})"}
