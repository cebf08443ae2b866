"""Randomised tie-breaking at the threshold, decided deterministically from each sample's content.

A deferral rule is a threshold ``λ`` and a tie cut ``τ`` in ``[0, 1]``: a sample with score ``s``
and tie key ``u`` is deferred when ``s > λ``, or ``s == λ`` and ``u > τ``. The key is a uniform
number in ``[0, 1)`` hashed from the sample's content (its text, or its feature values) and a
seed, so the same request always gets the same answer, and tuning, the harness and serving all
compute it with this one function. ``τ = 1`` never defers a tied sample (no tie-breaking).

Scores and thresholds are compared on a canonical grid (:func:`canonical`), so a score that
another process recomputes with different round-off still ties with the threshold it tied with
at tuning. Every comparison goes through :func:`defer_mask` or :func:`tied`, which apply it.

Why the certificates stay valid: ordering samples by ``(canonical score, key)`` is ordering them
by an augmented score that is a function of the sample alone (:func:`canonical` is a fixed,
non-decreasing map), so exchangeable samples give exchangeable augmented scores, with no ties
(up to identical contents). Split-conformal, conformal risk control and Learn-then-Test then
apply to the augmented score unchanged; this is the randomised ("smoothed") conformal
construction of Vovk, Gammerman & Shafer, *Algorithmic Learning in a Random World* (2005), §2.2,
with the auxiliary uniforms drawn by hashing instead of a random generator (see also Angelopoulos
& Bates, *A Gentle Introduction to Conformal Prediction*, 2021, on randomised tie-breaking). A
budget whose scores take a handful of values then defers the share it was tuned for instead of
starving at the edge of a plateau.

>>> keys = tie_keys(["Cheap meds, click now", "Meeting at noon"], seed=0)
>>> bool(((0 <= keys) & (keys < 1)).all()), bool((tie_keys(["Meeting at noon"], seed=0) == keys[1]).all())
(True, True)
>>> defer_mask(np.array([0.2, 0.5, 0.5, 0.9]), 0.5, 0.5, np.array([0.9, 0.1, 0.7, 0.3])).tolist()
[False, False, True, True]
>>> bool(tied(0.1 + 0.2, 0.3)), 0.1 + 0.2 == 0.3
(True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

NO_TIE_BREAK = 1.0
DECIMALS = 9
"""scores are compared rounded to this many decimals (:func:`canonical`)"""
_EXACT_BELOW = 1e6
_MANTISSA = 2.0 ** -53
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def tie_keys(samples: Sequence[str] | np.ndarray, seed: int = 0) -> np.ndarray:
    """Per-sample tie keys in ``[0, 1)``: a hash of each text or feature row, and ``seed``."""
    if isinstance(samples, np.ndarray) and samples.dtype.kind in "biuf":
        return _row_keys(samples, seed)
    salt = int(seed).to_bytes(8, "little", signed=True)
    digests = (hashlib.blake2b(str(text).encode("utf-8", "surrogatepass"), digest_size=8, salt=salt).digest()
               for text in samples)
    words = np.frombuffer(b"".join(digests), dtype="<u8")
    return (words >> np.uint64(11)).astype(np.float64) * _MANTISSA


def canonical(scores: ArrayLike) -> np.ndarray:
    """Scores (or thresholds) rounded to :data:`DECIMALS` decimals: the only form ever compared.

    Why 1e-9 absolute: deferral scores are probabilities, margins, entropies or gains of order 1,
    held in float64 (16 significant digits). Recomputing one in another process, batch or BLAS
    moves it by round-off of about 1e-16 to 1e-13, ten thousand times less than a 1e-9 step, so
    both copies land on the same grid point unless the score sits within that round-off of a
    rounding edge (a chance of about 1e-7 to 1e-4 per distinct value). And 1e-9 is far below any
    difference between scores that matters for a deferral decision: scores that close become a
    tie, which the tie keys split. The map is non-decreasing and idempotent (a canonical threshold
    stays itself), and keeps round values (``0.3``) as they are. Scores of magnitude 1e6 or more,
    infinities and NaN are returned unchanged. A float32 round trip (about 1e-7 relative) is
    *not* absorbed: keep deferral scores in float64 from the model to the comparison.

    >>> canonical([0.1 + 0.2, 0.3 * (1 + 1e-15), -np.inf]).tolist()
    [0.3, 0.3, -inf]
    """
    values = np.asarray(scores, dtype=float)
    rounded = np.round(np.clip(values, -_EXACT_BELOW, _EXACT_BELOW), DECIMALS)
    return np.where(np.abs(values) < _EXACT_BELOW, rounded, values)


def tied(scores: ArrayLike, threshold: ArrayLike) -> np.ndarray:
    """``score == threshold`` on the canonical grid (broadcasting): the samples the tie cut decides."""
    return canonical(scores) == canonical(threshold)


def defer_mask(scores: ArrayLike, threshold: ArrayLike, tie_break: ArrayLike = NO_TIE_BREAK,
               keys: ArrayLike | None = None) -> np.ndarray:
    """``score > threshold``, or ``score == threshold`` and ``key > tie_break``, both on the
    canonical grid (:func:`canonical`; broadcasting)."""
    scores, threshold = canonical(scores), canonical(threshold)
    above = scores > threshold
    if keys is None:
        return above
    return above | ((scores == threshold) & (np.asarray(keys, dtype=float) > np.asarray(tie_break, dtype=float)))


def _row_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """SplitMix64 over the float64 bits of each row (``-0.0`` counts as ``0.0``, every NaN as one NaN: a
    missing value hashes alike however it was produced), vectorised over rows."""
    values = np.ascontiguousarray(rows.reshape(len(rows), -1), dtype=np.float64) + 0.0
    values[np.isnan(values)] = np.nan
    words = values.view(np.uint64)
    state = np.full(len(rows), np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in words.T:
            state = _mix(state ^ column)
    return (state >> np.uint64(11)).astype(np.float64) * _MANTISSA


def _mix(state: np.ndarray) -> np.ndarray:
    state = state + _GOLDEN
    state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state ^ (state >> np.uint64(31))


def keys_for_ties(scores: np.ndarray, threshold: float, samples: Sequence[str] | np.ndarray, seed: int,
                  offset: int = 0) -> np.ndarray | None:
    """Tie keys for the samples tied at ``threshold`` (zero elsewhere), ``None`` when none is tied;
    ``samples[offset + i]`` is the sample of ``scores[i]``."""
    at = np.flatnonzero(tied(scores, threshold))
    if not at.size:
        return None
    keys = np.zeros(len(scores))
    rows = at + offset
    chosen = samples[rows] if isinstance(samples, np.ndarray) else [samples[i] for i in rows]
    keys[at] = tie_keys(chosen, seed)
    return keys
