"""The vectorised sweep equals the naive per-threshold loop; frontier metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.frontier import aiq, apgr, cpt, pgr, upper_hull
from experiments.sweep import auroc_curve, sweep, sweep_naive


def _random_case(seed: int, n: int = 300, ties: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    if ties:
        scores = np.round(scores, 1)
    return {
        "scores": scores,
        "small_pred": rng.integers(0, 2, n),
        "expert_pred": rng.integers(0, 2, n),
        "y": rng.integers(0, 2, n),
        "expert_cost": rng.random(n) * 3,
        "small_cost": np.full(n, 0.01),
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_sweep_equals_the_naive_loop(seed: int, ties: bool) -> None:
    case = _random_case(seed, ties=ties)
    fast, slow = sweep(**case), sweep_naive(**case)
    for name in ("threshold", "defer_rate", "accuracy", "f1", "cost_per_1k"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), err_msg=name)


def test_sweep_thresholds_reproduce_their_deferral_rates() -> None:
    case = _random_case(11, ties=True)
    curve = sweep(**case)
    realised = [(case["scores"] > t).mean() for t in curve.threshold]
    np.testing.assert_allclose(realised, curve.defer_rate)


def test_sweep_hand_computed_case() -> None:
    curve = sweep(
        scores=np.array([0.9, 0.1, 0.5, 0.5]),
        small_pred=np.array([0, 1, 0, 1]),
        expert_pred=np.array([1, 1, 1, 1]),
        y=np.array([1, 1, 1, 0]),
        expert_cost=np.array([2.0, 2.0, 2.0, 2.0]),
    )
    assert curve.defer_rate.tolist() == [0.0, 0.25, 0.75, 1.0]
    assert curve.accuracy.tolist() == [0.25, 0.5, 0.75, 0.75]
    assert curve.cost_per_1k.tolist() == [0.0, 500.0, 1500.0, 2000.0]
    # at 75 %: predictions 1,1,1,1 vs truth 1,1,1,0: tp=3, fp=1 -> F1 = 6/7
    assert curve.f1[2] == pytest.approx(6 / 7)


def test_auroc_curve_ends_at_small_and_expert_auroc() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    small, expert = rng.random(200), np.clip(y * 0.6 + rng.random(200) * 0.5, 0, 1)
    values = auroc_curve(rng.random(200), small, expert, y, np.array([0.0, 1.0]))
    assert values[0] == pytest.approx(roc_auc_score(y, small))
    assert values[1] == pytest.approx(roc_auc_score(y, expert))


def test_upper_hull_is_concave_and_non_decreasing() -> None:
    x, hull = upper_hull(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.5, 0.9, 0.6, 0.8]))
    assert x.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert hull.tolist() == [0.5, 0.9, 0.9, 0.9]


def test_aiq_is_the_mean_height_of_the_hull() -> None:
    # hull through (0, .5) and (2, .9): mean height .7
    assert aiq(np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.6, 0.9])) == pytest.approx(0.7)


def test_pgr_apgr_and_cpt_on_a_linear_curve() -> None:
    rate = np.linspace(0, 1, 11)
    quality = 0.8 + 0.1 * rate  # small 0.8, expert 0.9, linear in between
    np.testing.assert_allclose(pgr(quality, 0.8, 0.9), rate)
    assert apgr(rate, quality, 0.8, 0.9) == pytest.approx(0.5)
    assert cpt(rate, quality, 0.8, 0.9, 50) == pytest.approx(0.5)
    assert cpt(rate, quality, 0.8, 0.9, 80) == pytest.approx(0.8)


def test_pgr_is_undefined_when_the_expert_is_not_better() -> None:
    rate = np.linspace(0, 1, 5)
    assert np.isnan(apgr(rate, np.full(5, 0.8), 0.8, 0.7))
    assert np.isnan(cpt(rate, np.full(5, 0.8), 0.8, 0.8, 50))
