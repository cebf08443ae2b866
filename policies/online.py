"""Online deferral control for serving: track a target rate under drift, never exceed a hard cap.

Quantile tracking moves the threshold after every decision, ``λ ← λ + η (wanted − β)``, where
``wanted`` is 1 when ``score > λ``; its fixed point is the threshold whose deferral rate is the
target ``β``, so the realised rate follows the target when the score distribution drifts.

The hard cap is a sliding-window limit: no ``window`` consecutive requests ever contain more
than ``⌊hard_cap · window⌋`` deferrals. A batch may defer at most that number minus the
deferrals among the previous ``window - 1`` requests, and the allowance goes to its highest
scores; the rest of the batch is answered by the small tier. Bookkeeping is a ring buffer with a
running count: O(1) amortised per decision, numpy per batch.

A certified threshold may be clamped: ``min_threshold`` keeps the controller from deferring more
than the certified rule (a cost budget: its deferrals stay a subset of the certified ones, so the
certified cost bound still holds), ``max_threshold`` from deferring less (an accepted-error budget:
the answers it accepts stay a subset of the certified ones); both pin a joint budget. Ties at the
threshold are broken per sample as in tuning (:mod:`policies.ties`); :func:`guarantee_now` says
which guarantee holds for the current threshold.

Calls are synchronous and never await, so one controller may be shared by every coroutine of a
single asyncio event loop (e.g. a Ray Serve router replica) without locks. It is not meant to be
shared across threads.

>>> import numpy as np
>>> controller = OnlineController(target=0.1, threshold=0.5, hard_cap=0.2, window=100)
>>> mask = controller.decide(np.random.default_rng(0).random(64))
>>> int(mask.sum()) <= 20
True
>>> sorted(controller.state())[:3]
['cap_remaining', 'cap_window_deferrals', 'certified_threshold']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from policies.ties import NO_TIE_BREAK, defer_mask, tie_keys


class OnlineController:
    """Per-batch defer decisions with quantile tracking and a sliding-window hard cap.

    ``threshold`` is the starting threshold (e.g. a tuner's ``threshold_``; must be finite);
    ``learning_rate`` is ``η`` in score units per decision; ``hard_cap=None`` disables the cap.
    ``tie_break`` and ``tie_seed`` are the certificate's tie rule; ``min_threshold`` and
    ``max_threshold`` clamp the threshold (see the module docstring).
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
        self.learning_rate = float(learning_rate)
        self.hard_cap = hard_cap
        self.window = int(window)
        self.cap_deferrals = self.window if hard_cap is None else math.floor(hard_cap * self.window + 1e-9)
        self._threshold = float(threshold)
        self.certified_threshold = float(threshold)
        self.tie_break = float(tie_break)
        self.tie_seed = tie_seed
        self.min_threshold, self.max_threshold = float(lowest), float(highest)
        self._target = 0.0
        self.set_target(target)
        self._history = np.zeros(self.window, dtype=bool)
        self._cursor = 0
        self._decisions = 0
        self._in_window = 0

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

    def decide(self, scores: ArrayLike, samples: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """Boolean defer mask for a batch of deferral scores (in arrival order); updates the state.

        ``samples`` (texts or feature rows, aligned with ``scores``) break ties at the threshold;
        only the tied ones are hashed.
        """
        scores = np.asarray(scores, dtype=float).reshape(-1)
        mask = np.empty(len(scores), dtype=bool)
        for start in range(0, len(scores), self.window):
            chunk = scores[start:start + self.window]
            wanted = defer_mask(chunk, self._threshold, self.tie_break, self._keys(chunk, samples, start))
            defer = self._capped(chunk, wanted)
            self._record(defer)
            moved = self._threshold + self.learning_rate * (np.count_nonzero(wanted) - self._target * len(chunk))
            self._threshold = min(max(moved, self.min_threshold), self.max_threshold)
            mask[start:start + len(chunk)] = defer
        return mask

    def state(self) -> dict[str, Any]:
        """Target, threshold, realised rate over the window and the cap's state, JSON-ready."""
        seen = min(self._decisions, self.window)
        return {
            "target": self._target,
            "threshold": self._threshold,
            "realised_rate": self._in_window / seen if seen else 0.0,
            "window": self.window,
            "decisions": self._decisions,
            "window_deferrals": self._in_window,
            "hard_cap": self.hard_cap,
            "cap_window_deferrals": self.cap_deferrals,
            "cap_remaining": self._allowance(),
            "certified_threshold": self.certified_threshold,
            "tie_break": self.tie_break,
        }

    def record(self, deferred: ArrayLike, wanted: int) -> None:
        """Account for decisions taken elsewhere at this threshold (a router replica holding a lease):
        ``deferred`` in arrival order, ``wanted`` of them at or above the threshold by the tie rule;
        the window and the (clamped) threshold move as :meth:`decide` would have moved them."""
        deferred = np.asarray(deferred, dtype=bool).reshape(-1)
        for start in range(0, len(deferred), self.window):
            self._record(deferred[start:start + self.window])
        moved = self._threshold + self.learning_rate * (wanted - self._target * len(deferred))
        self._threshold = min(max(moved, self.min_threshold), self.max_threshold)

    def snapshot(self) -> dict[str, Any]:
        """Settings and state (threshold, target, the window's decisions), JSON-ready; see :meth:`restore`."""
        order = (self._cursor + np.arange(self.window)) % self.window  # oldest first
        return {"target": self._target, "threshold": self._threshold, "learning_rate": self.learning_rate,
                "hard_cap": self.hard_cap, "window": self.window, "decisions": self._decisions,
                "history": np.flatnonzero(self._history[order]).tolist(), "tie_break": self.tie_break,
                "tie_seed": self.tie_seed, "certified_threshold": self.certified_threshold,
                "min_threshold": None if math.isinf(self.min_threshold) else self.min_threshold,
                "max_threshold": None if math.isinf(self.max_threshold) else self.max_threshold}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> "OnlineController":
        """The controller a :meth:`snapshot` was taken of."""
        controller = cls(target=snapshot["target"], threshold=snapshot["threshold"],
                         learning_rate=snapshot["learning_rate"], hard_cap=snapshot["hard_cap"],
                         window=snapshot["window"], tie_break=snapshot["tie_break"], tie_seed=snapshot["tie_seed"],
                         min_threshold=snapshot["min_threshold"], max_threshold=snapshot["max_threshold"])
        controller.certified_threshold = float(snapshot["certified_threshold"])
        controller._history[np.asarray(snapshot["history"], dtype=np.int64)] = True
        controller._in_window = int(controller._history.sum())
        controller._decisions = int(snapshot["decisions"])
        return controller

    def _keys(self, chunk: np.ndarray, samples: Sequence[str] | np.ndarray | None, offset: int) -> np.ndarray | None:
        if samples is None or self.tie_seed is None or self.tie_break >= NO_TIE_BREAK:
            return None
        tied = np.flatnonzero(chunk == self._threshold)
        if not tied.size:
            return None
        keys = np.zeros(len(chunk))
        rows = tied + offset
        chosen = samples[rows] if isinstance(samples, np.ndarray) else [samples[i] for i in rows]
        keys[tied] = tie_keys(chosen, self.tie_seed)
        return keys

    def _allowance(self) -> int:
        """Deferrals the next request may still make: the cap minus those in the last ``window-1``."""
        recent = self._in_window - int(self._history[self._cursor])
        return max(self.cap_deferrals - recent, 0)

    def _capped(self, scores: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        allowance = self._allowance()
        if np.count_nonzero(wanted) <= allowance:
            return wanted
        defer = np.zeros(len(scores), dtype=bool)
        if allowance:
            candidates = np.flatnonzero(wanted)
            keep = np.argpartition(-scores[candidates], allowance - 1)[:allowance]
            defer[candidates[keep]] = True
        return defer

    def _record(self, defer: np.ndarray) -> None:
        slots = (self._cursor + np.arange(len(defer))) % self.window
        self._in_window += int(np.count_nonzero(defer)) - int(np.count_nonzero(self._history[slots]))
        self._history[slots] = defer
        self._cursor = (self._cursor + len(defer)) % self.window
        self._decisions += len(defer)


def guarantee_now(kind: str, certificate: dict[str, Any] | None, state: dict[str, Any]) -> dict[str, str]:
    """Which guarantee covers the threshold the controller holds now: ``status`` and a sentence.

    ``certified``: the certified rule itself; ``defers-less`` / ``defers-more``: a clamped threshold
    whose deferrals (cost) or accepted answers (accepted error) are a subset of the certified
    rule's, so the certificate carries over to them; ``tracking``: a rate budget whose controller
    moved the threshold, the certificate no longer covers it and the controller holds the realised
    rate at the target over the window instead; ``uncertified``: no certificate was served.
    """
    if certificate is None:
        return {"status": "uncertified", "statement": "no certificate: the threshold was not tuned with a guarantee"}
    threshold, certified = float(state["threshold"]), float(state["certified_threshold"])
    statement = str(certificate["statement"])
    if threshold == certified:
        return {"status": "certified", "statement": statement}
    if kind == "cost" and threshold > certified:
        return {"status": "defers-less", "statement": f"{statement} (the controller defers a subset of the certified "
                                                      f"rule's requests: threshold {threshold:.4g} > {certified:.4g})"}
    if kind == "accepted-error" and threshold < certified:
        return {"status": "defers-more", "statement": f"{statement}, for the accepted answers of the certified rule; "
                                                      f"the controller accepts a more confident subset of them "
                                                      f"(threshold {threshold:.4g} < {certified:.4g})"}
    return {"status": "tracking", "statement": f"the certificate covers threshold {certified:.4g}, not the current "
                                               f"{threshold:.4g}: the controller holds the realised deferral rate at "
                                               f"{state['target']:.4g} over the last {state['window']} requests"}
