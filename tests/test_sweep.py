"""The vectorised sweep equals the naive per-rule loop; it splits ties with tie keys as serving does;
frontier metrics on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.frontier import aiq, apgr, cpt, pgr, upper_hull
from experiments.sweep import auroc_curve, sweep, sweep_naive
from policies.held_out import Scored
from policies.ties import defer_mask


def _random_case(seed: int, n: int = 300, ties: bool = False, keys: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    if ties:
        scores = np.round(scores, 1)
    return {
        "tie_keys": rng.random(n) if keys else None,
        "scores": scores,
        "small_pred": rng.integers(0, 2, n),
        "expert_pred": rng.integers(0, 2, n),
        "y": rng.integers(0, 2, n),
        "expert_cost": rng.random(n) * 3,
        "small_cost": np.full(n, 0.01),
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("keys", [False, True])
def test_vectorised_sweep_equals_the_naive_loop(seed: int, ties: bool, keys: bool) -> None:
    case = _random_case(seed, ties=ties, keys=keys)
    fast, slow = sweep(**case), sweep_naive(**case)
    for name in ("threshold", "tie_break", "defer_rate", "accuracy", "f1", "cost_per_1k"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), err_msg=name)


@pytest.mark.parametrize("keys", [False, True])
def test_sweep_rules_reproduce_their_deferral_rates(keys: bool) -> None:
    case = _random_case(11, ties=True, keys=keys)
    curve = sweep(**case)
    realised = [defer_mask(case["scores"], t, c, case["tie_keys"]).mean() for t, c in zip(curve.threshold, curve.tie_break)]
    np.testing.assert_allclose(realised, curve.defer_rate)


def test_tie_keys_give_the_sweep_a_point_inside_every_tie() -> None:
    case = _random_case(11, ties=True, keys=True)
    assert len(sweep(**{**case, "tie_keys": None}).defer_rate) == len(np.unique(case["scores"])) + 1
    np.testing.assert_allclose(sweep(**case).defer_rate, np.arange(301) / 300)


def test_a_sweep_of_scores_with_round_off_is_the_sweep_of_the_scores() -> None:
    case = _random_case(3, ties=True, keys=True)
    exact, recomputed = sweep(**case), sweep(**{**case, "scores": case["scores"] * (1 + 1e-15)})
    assert exact.as_dict() == recomputed.as_dict()


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


def _scored(rng: np.random.Generator, n: int, keys: bool) -> Scored:
    """A part whose small tier's calibrated top probability takes 5 values (isotonic plateaus)."""
    from cascade.scoring import TierScores

    y = rng.integers(0, 2, n)
    top = rng.choice([0.55, 0.65, 0.75, 0.85, 0.95], size=n)
    small_pred = np.where(rng.random(n) < top, y, 1 - y)
    expert_pred = np.where(rng.random(n) < 0.95, y, 1 - y)

    def tier(name: str, pred: np.ndarray, confidence: np.ndarray) -> TierScores:
        probs = np.where(pred[:, None] == np.arange(2), confidence[:, None], 1 - confidence[:, None])
        zeros = np.zeros(n)
        return TierScores(tier=name, ids=np.arange(n), y=y, probs=probs, cost=np.ones(n) if name == "expert" else zeros,
                          latency_s=zeros, prompt_tokens=zeros, completion_tokens=zeros, features=probs)

    return Scored(small=tier("small", small_pred, top), experts={"expert": tier("expert", expert_pred, np.full(n, 0.9))},
                  tie_keys=rng.random(n) if keys else None)


def test_the_harness_sweeps_with_the_test_parts_tie_keys() -> None:
    from cascade.config import CascadeConfig
    from experiments.run import frontier_tables

    config = CascadeConfig.from_yaml(Path(__file__).resolve().parents[1] / "experiments" / "configs" / "spamassassin.yaml")
    config = config.model_copy(update={"experiment": config.experiment.model_copy(
        update={"policies": ["confidence"], "budgets": [0.2], "random_seeds": 1})})
    fit, test = _scored(np.random.default_rng(0), 300, keys=False), _scored(np.random.default_rng(1), 400, keys=True)
    curves, scalars = frontier_tables(config, fit, test)
    curve = curves["expert"]["confidence"]
    assert curve["defer_rate"] == (np.arange(401) / 400).tolist()   # every tie split, one sample at a time
    served = defer_mask(1 - test.small.probs.max(axis=1), curve["threshold"][80], curve["tie_break"][80], test.tie_keys)
    answer = np.where(served, test.experts["expert"].pred, test.small.pred)
    assert served.mean() == 0.2
    assert scalars["expert"]["policies"]["confidence"]["at_budget"]["0.2"]["accuracy"] == pytest.approx(
        np.mean(answer == test.small.y))


def test_auroc_curve_defers_tied_scores_in_tie_key_order() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y, small, expert, keys = rng.integers(0, 2, 200), rng.random(200), rng.random(200), rng.random(200)
    deferred = keys > np.median(keys)
    value = auroc_curve(np.full(200, 0.5), small, expert, y, np.array([0.5]), tie_keys=keys)[0]
    assert value == pytest.approx(roc_auc_score(y, np.where(deferred, expert, small)))


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
