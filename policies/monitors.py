"""Anytime-valid monitors for served certificates: e-processes that may be checked after every observation.

Each monitor keeps a nonnegative test supermartingale ``K_t`` (its *evidence*, an e-process) that
starts at 1 and is fair or unfavourable while the certificate holds. By Ville's inequality
``P(sup_t K_t >= 1/δ) <= δ``, so raising the alarm the first time the evidence reaches ``1/δ`` keeps
the false-alarm probability at most ``δ`` however often it is checked; a fixed-n test checked after
every label does not.

* :class:`BoundedMeanMonitor`: labels; ``H0: E[X] <= alpha`` for ``X`` in ``[0, scale]`` (``X = 1``
  when an accepted answer was wrong), by betting (Waudby-Smith & Ramdas 2023);
* :class:`RateMonitor`: the same test against a certified rate or cost bound ``beta`` (no labels);
* :class:`ExchangeabilityMonitor`: no labels; are served deferral scores exchangeable with the
  certify part's? A conformal test martingale (Vovk, Nouretdinov & Gammerman 2003).

>>> import numpy as np
>>> monitor = BoundedMeanMonitor(alpha=0.1, delta=0.05)
>>> monitor.update(np.random.default_rng(0).random(400) < 0.25).alarm_, monitor.alarm_at_
(True, 56)
"""

from __future__ import annotations

import math
from typing import Self

import numpy as np
from numpy.typing import ArrayLike

from cascade.persistence import check_fitted

MAX_BET = 0.5
"""Largest fraction of the wealth one observation may risk (WSR's truncation ``c``)."""
PRIOR_MEAN, PRIOR_VARIANCE = 0.5, 0.25
"""Pseudo-observation that starts the plug-in mean and variance (WSR's choice, on the unit scale)."""
CHUNK = 256
"""Scores ranked against each other at once by :class:`ExchangeabilityMonitor` (a CHUNK² mask)."""


def _level(name: str, value: float, upper: float = 1.0) -> float:
    if not 0 < value < upper:
        raise ValueError(f"{name} must lie in (0, {upper:g}), got {value}")
    return float(value)


def _scale(scale: float) -> float:
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return float(scale)


def _observations(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} contain NaN at positions {np.flatnonzero(np.isnan(array))[:5].tolist()}")
    return array


def _running(start: float, steps: np.ndarray) -> np.ndarray:
    """``start`` plus the running sums of ``steps``, added one at a time (a batch = its items fed one by one)."""
    return np.cumsum(np.concatenate([[start], steps]))


class _Monitor:
    """Evidence bookkeeping shared by the monitors: ``n_``, ``log_evidence_``, a sticky alarm."""

    delta: float
    n_: int
    log_evidence_: float
    alarm_: bool
    alarm_at_: int | None

    def _reset(self) -> None:
        self.n_, self.log_evidence_, self.alarm_, self.alarm_at_ = 0, 0.0, False, None

    @property
    def evidence_(self) -> float:
        """The e-value now (the wealth ``K_t``); ``inf`` past ``exp(709)``."""
        return float(np.exp(self.log_evidence_))

    def _record(self, log_evidence: np.ndarray) -> None:
        """Take the evidence after each new observation; alarm at the first one reaching ``1/δ``."""
        crossed = np.flatnonzero(log_evidence >= -math.log(self.delta))
        if not self.alarm_ and crossed.size:
            self.alarm_, self.alarm_at_ = True, self.n_ + int(crossed[0]) + 1
        self.n_ += len(log_evidence)
        self.log_evidence_ = float(log_evidence[-1])


class BoundedMeanMonitor(_Monitor):
    """Betting e-process for ``H0: E[X_t | past] <= alpha`` with observations ``X_t`` in ``[0, scale]``.

    Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables by betting", JRSS-B
    85(1). With ``x = X / scale`` and ``m = alpha / scale`` the wealth is
    ``K_t = prod_i (1 + λ_i (x_i - m))``; the bet ``λ_i`` is their aGRAPA bet
    ``(μ_{i-1} - m) / (σ²_{i-1} + (μ_{i-1} - m)²)`` from the plug-in mean and variance of the earlier
    observations (predictable), clipped to ``[0, MAX_BET / m]``. A bet of at least 0 makes ``K_t`` a
    supermartingale under every mean at most ``m`` (the null is composite); at most ``MAX_BET / m``
    keeps each factor at least ``1 - MAX_BET``, so ``K_t > 0``. ``mean_`` is the running mean of
    ``X`` (NaN before any observation). An update is vectorised (running sums) and gives the same
    evidence as its observations fed one at a time.

    >>> monitor = BoundedMeanMonitor(alpha=0.02, delta=0.05)
    >>> monitor.update([0, 0, 1, 0]).n_, monitor.mean_, monitor.alarm_
    (4, 0.25, False)
    """

    def __init__(self, alpha: float, delta: float = 0.05, scale: float = 1.0) -> None:
        self.scale = _scale(scale)
        self.alpha = _level("alpha", alpha, self.scale)
        self.delta = _level("delta", delta)
        self._reset()
        self._sum = 0.0
        self._squares = 0.0

    @property
    def mean_(self) -> float:
        """Running mean of the observations, in their own units."""
        return self._sum * self.scale / self.n_ if self.n_ else math.nan

    def update(self, x: ArrayLike) -> Self:
        """Add observations (in arrival order) in ``[0, scale]``; returns the monitor."""
        x = _observations("observations", x)
        if ((x < 0) | (x > self.scale)).any():
            outside = x[(x < 0) | (x > self.scale)][:5].tolist()
            raise ValueError(f"observations must lie in [0, {self.scale:g}] (the scale), got {outside}")
        if not len(x):
            return self
        x = x / self.scale
        null = self.alpha / self.scale
        counts = self.n_ + np.arange(len(x) + 1) + 1.0
        sums = _running(self._sum, x)
        means = (PRIOR_MEAN + sums) / counts
        squares = _running(self._squares, (x - means[1:]) ** 2)
        variances = (PRIOR_VARIANCE + squares) / counts
        gap = means[:-1] - null
        bets = np.clip(gap / (variances[:-1] + gap**2), 0.0, MAX_BET / null)
        self._sum, self._squares = float(sums[-1]), float(squares[-1])
        self._record(_running(self.log_evidence_, np.log1p(bets * (x - null)))[1:])
        return self


class RateMonitor(BoundedMeanMonitor):
    """:class:`BoundedMeanMonitor` against a label-free certified bound ``beta``.

    Deferral indicators (``scale=1``) against a certified deferral rate, or costs per request in
    ``[0, scale]`` against a certified mean cost ``beta`` (in the same units).

    >>> RateMonitor(beta=0.15).update([1, 0, 0, 0]).mean_
    0.25
    >>> RateMonitor(beta=0.4, scale=2.0).update([0.5, 1.5]).mean_
    1.0
    """

    def __init__(self, beta: float, delta: float = 0.05, scale: float = 1.0) -> None:
        self.beta = _level("beta", beta, _scale(scale))
        super().__init__(self.beta, delta, scale)


class ExchangeabilityMonitor(_Monitor):
    """Conformal test martingale: are served scores exchangeable with the ``fit`` (certify part) scores?

    Each served score ``s_n`` (the score itself is the nonconformity) gets the smoothed *online*
    conformal p-value against every score seen so far (reference and stream, ``s_n`` included;
    ``θ_n`` uniform from ``seed`` breaks the ties)::

        p_n = (#{i <= n: s_i > s_n} + θ_n #{i <= n: s_i = s_n}) / n

    If the reference followed by the stream is exchangeable, these p-values are independent and
    uniform (Vovk, Nouretdinov & Gammerman 2003, "Testing exchangeability on-line", ICML; Vovk,
    Gammerman & Shafer 2005, "Algorithmic Learning in a Random World", ch. 7). Ranking against the
    fixed reference alone would not do: those p-values share the reference, so they are dependent.
    The martingale bets on the p-values with the Simple Jumper (Vovk, Petej, Nouretdinov, Ahlberg,
    Carlsson & Gammerman 2021, "Retrain or not retrain: conformal test martingales for change-point
    detection", COPA): a mixture of the bets ``1 + ε (p - 1/2)``, ``ε`` in ``{-1, 0, 1}``, whose
    capital moves to a uniformly chosen ``ε`` with probability ``jump`` at each step. It detects
    a shift of the scores up or down, also after a long exchangeable stretch; a change of spread
    alone leaves the p-values' mean at 1/2 and is not what it bets on. The bag of seen scores is
    kept sorted (memory grows with the stream; refit on recertification), and the jumper's 3-state
    recursion runs as a log-depth scan of 3x3 products, so an update is vectorised.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> monitor = ExchangeabilityMonitor(delta=0.05, seed=0).fit(rng.normal(size=500))
    >>> monitor.update(rng.normal(size=300)).alarm_
    False
    >>> monitor.update(rng.normal(1.0, size=300)).alarm_, monitor.alarm_at_ > 300
    (True, True)
    """

    def __init__(self, delta: float = 0.05, jump: float = 0.01, seed: int | None = None) -> None:
        self.delta = _level("delta", delta)
        if not 0 < jump <= 1:
            raise ValueError(f"jump must lie in (0, 1], got {jump}")
        self.jump = float(jump)
        self.seed = seed

    def fit(self, reference: ArrayLike) -> Self:
        """Start over against ``reference`` scores (e.g. the certify part's): evidence 1, no alarm."""
        reference = _observations("reference scores", reference)
        if not len(reference):
            raise ValueError("reference scores are empty: need at least one score to compare with")
        self._seen = np.sort(reference)
        self._rng = np.random.default_rng(self.seed)
        self._weights = np.full(3, 1 / 3)
        self.n_reference_ = len(reference)
        self._reset()
        return self

    def update(self, scores: ArrayLike) -> Self:
        """Add served scores (in arrival order); returns the monitor."""
        check_fitted(self, ["n_reference_"])
        scores = _observations("scores", scores)
        if not len(scores):
            return self
        chunks = [scores[start:start + CHUNK] for start in range(0, len(scores), CHUNK)]
        p_values = np.concatenate([self._p_values(chunk) for chunk in chunks])
        self._record(self._jumper(p_values))
        return self

    def _p_values(self, chunk: np.ndarray) -> np.ndarray:
        """Online smoothed p-values of ``chunk``: each against the bag and the chunk's earlier scores."""
        earlier = np.tri(len(chunk), k=-1, dtype=bool)
        above = len(self._seen) - np.searchsorted(self._seen, chunk, side="right")
        above += (earlier & (chunk[None, :] > chunk[:, None])).sum(axis=1)
        tied = np.searchsorted(self._seen, chunk, side="right") - np.searchsorted(self._seen, chunk, side="left")
        tied += (earlier & (chunk[None, :] == chunk[:, None])).sum(axis=1) + 1
        bag_sizes = len(self._seen) + np.arange(1, len(chunk) + 1)
        p_values = (above + self._rng.random(len(chunk)) * tied) / bag_sizes
        ordered = np.sort(chunk)
        self._seen = np.insert(self._seen, np.searchsorted(self._seen, ordered), ordered)
        return p_values

    def _jumper(self, p_values: np.ndarray) -> np.ndarray:
        """Log capital of the Simple Jumper after each p-value; keeps the weights of its three bets."""
        mixing = (1 - self.jump) * np.eye(3) + self.jump / 3
        bets = 1 + np.array([-1.0, 0.0, 1.0]) * (p_values[:, None] - 0.5)
        steps = bets[:, :, None] * mixing  # capital_t = steps[t] @ capital_{t-1}
        log_scale = np.zeros(len(p_values))
        shift = 1
        while shift < len(p_values):  # Hillis-Steele scan: steps[t] becomes steps[t] @ ... @ steps[0]
            steps[shift:] = steps[shift:] @ steps[:-shift]
            log_scale[shift:] += log_scale[:-shift].copy()
            largest = steps.max(axis=(1, 2))
            steps /= largest[:, None, None]
            log_scale += np.log(largest)
            shift *= 2
        capital = steps @ self._weights
        totals = capital.sum(axis=1)
        self._weights = capital[-1] / totals[-1]
        return self.log_evidence_ + log_scale + np.log(totals)
