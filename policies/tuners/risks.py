"""What a tuner controls, per candidate threshold: deferrals, accepted errors and expert spend.

:class:`RiskTable` sorts ``m`` certify sets of ``n`` samples by score once and tabulates, for
every candidate threshold, how many samples are accepted and how many of those the small tier
gets wrong, so each tuner reads its risk at any threshold in O(1).

>>> import numpy as np
>>> table = RiskTable(np.array([[0.3, 0.1, 0.2]]), np.array([[True, False, True]]), None)
>>> table.accepted.tolist(), table.errors.tolist()
([[0.0, 1.0, 2.0, 3.0, 3.0]], [[0.0, 1.0, 1.0, 1.0, 1.0]])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from policies.ties import NO_TIE_BREAK, canonical


class RiskTable:
    """``m`` certify sets of ``n`` samples, sorted by score, with the counts every tuner needs.

    Samples are ordered by ``(score, tie key)``, scores on the canonical grid that serving compares
    on (:func:`policies.ties.canonical`), so every threshold in the table is canonical and a served
    :func:`~policies.ties.defer_mask` reproduces the tabulated decisions exactly. Candidate rules are
    indexed by a *position* in ``[-1, n]``: ``-1`` is ``-inf`` (defer all), ``p`` in ``[0, n)``
    accepts the ``p+1`` smallest in that order (``thresholds`` and ``tie_breaks`` give the rule),
    ``n`` is ``+inf`` (defer none). Without tie keys, or for samples with equal score *and* key,
    a position inside a tie accepts the whole tie.
    """

    def __init__(self, scores: np.ndarray, small_correct: np.ndarray | None, expert_cost: np.ndarray | None,
                 tie_keys: np.ndarray | None = None) -> None:
        scores = canonical(scores)
        m, n = scores.shape
        keys = np.zeros_like(scores) if tie_keys is None else tie_keys
        order = np.lexsort((keys, scores), axis=1)
        ascending = np.take_along_axis(scores, order, axis=1)
        ascending_keys = np.take_along_axis(keys, order, axis=1)
        last_of_tie = np.ones((m, n), dtype=bool)
        last_of_tie[:, :-1] = (ascending[:, 1:] != ascending[:, :-1]) | (ascending_keys[:, 1:] != ascending_keys[:, :-1])
        tie_end = np.minimum.accumulate(np.where(last_of_tie, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
        edge = np.zeros((m, 1))
        self.m, self.n = m, n
        self.thresholds = np.hstack([edge - np.inf, ascending, edge + np.inf])
        self.ascending, self.ascending_keys = ascending, ascending_keys
        cuts = np.full((m, n), NO_TIE_BREAK) if tie_keys is None else ascending_keys
        self.tie_breaks = np.hstack([edge, cuts, edge + NO_TIE_BREAK])
        self.accepted = np.hstack([edge, tie_end + 1.0, edge + n])
        self.errors: np.ndarray | None = None
        self.cost_descending: np.ndarray | None = None
        if small_correct is not None:
            wrong = np.cumsum(~np.take_along_axis(small_correct, order, axis=1), axis=1)
            self.errors = np.hstack([edge, np.take_along_axis(wrong, tie_end, axis=1), wrong[:, -1:]]).astype(float)
        if expert_cost is not None:
            self.cost_descending = np.take_along_axis(expert_cost, order, axis=1)[:, ::-1]

    def at(self, table: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rows of ``table`` (one of the ``(m, n + 2)`` tables above) at ``positions`` (``(m,)`` or ``(m, k)``)."""
        positions = np.asarray(positions)
        index = (positions if positions.ndim == 2 else positions[:, None]) + 1
        picked = np.take_along_axis(table, np.broadcast_to(index, (self.m, index.shape[1])), axis=1)
        return picked if positions.ndim == 2 else picked[:, 0]

    def locate(self, thresholds: np.ndarray, tie_breaks: np.ndarray) -> np.ndarray:
        """Positions ``(m, k)`` of ``k`` fixed rules: how many samples each accepts, minus one.

        A rule ``(λ, τ)`` accepts ``s < λ``, and ``s == λ`` with key ``≤ τ`` (:mod:`policies.ties`;
        ``λ`` on the canonical grid).
        """
        score, key = self.ascending[:, :, None], self.ascending_keys[:, :, None]
        thresholds = canonical(thresholds)
        accepts = (score < thresholds) | ((score == thresholds) & (key <= tie_breaks))
        return accepts.sum(axis=1) - 1


def last_true(mask: np.ndarray) -> np.ndarray:
    """Index of the last ``True`` in each row, ``-1`` for rows without one.

    >>> last_true(np.array([[True, False, True], [False, False, False]])).tolist()
    [2, -1]
    """
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, -1)


class Grid(NamedTuple):
    """Candidate rules ``(threshold, tie_break)`` for Learn-then-Test, fixed before certification."""

    threshold: np.ndarray
    tie_break: np.ndarray


def threshold_grid(scores: ArrayLike, n_grid: int = 20, max_rate: float = 1.0,
                   tie_keys: ArrayLike | None = None) -> Grid:
    """``n_grid`` rules from data *other than the certify part* (e.g. the fit part's scores).

    Rule ``k`` defers about ``max_rate · (1 - k/n_grid)`` of ``scores`` (quantiles in ``(score,
    tie key)`` order, scores on the canonical grid of :func:`policies.ties.canonical`); the last
    defers nothing. Learn-then-Test is valid when the tested rules do not depend on the certify
    data, which is why this grid must come from elsewhere.

    >>> threshold_grid(np.arange(10.0), n_grid=4).threshold.tolist()
    [2.0, 4.0, 7.0, inf]
    """
    scores = canonical(scores).reshape(-1)
    if n_grid < 1 or len(scores) == 0:
        raise ValueError(f"a threshold grid needs n_grid ≥ 1 and scores to place it, got n_grid={n_grid} and "
                         f"{len(scores)} scores")
    keys = np.zeros(len(scores)) if tie_keys is None else np.asarray(tie_keys, dtype=float).reshape(-1)
    order = np.lexsort((keys, scores))
    shares = 1.0 - max_rate + max_rate * np.arange(1, n_grid + 1) / n_grid
    index = np.clip(np.ceil(shares * len(scores) - 1e-9).astype(int) - 1, 0, len(scores) - 1)[:-1]
    threshold = np.append(scores[order][index], np.inf)
    tie_break = np.append(np.full(len(index), NO_TIE_BREAK) if tie_keys is None else keys[order][index], NO_TIE_BREAK)
    return Grid(threshold, tie_break)


def as_grid(grid: Grid | ArrayLike | None, owner: str) -> Grid:
    """A :class:`Grid` (thresholds canonical) from a grid or plain thresholds (ties accepted); a clear
    error when missing."""
    if grid is None:
        raise ValueError(f"{owner} needs grid: candidate thresholds fixed before the certify part is seen, e.g. "
                         "threshold_grid(policy scores on the fit part)")
    if isinstance(grid, Grid):
        return Grid(canonical(grid.threshold), np.asarray(grid.tie_break, dtype=float))
    threshold = canonical(grid).reshape(-1)
    return Grid(threshold, np.full(len(threshold), NO_TIE_BREAK))
