"""Posthoc and learned policies score as the implementation that fixed their numbers (to float round-off:
another CPU's BLAS may differ in the last bits).

``tests/data/gain_reference/`` was written by that implementation (the code before the two policies shared
one gain model, issue 27): ``scores.npz`` holds every case's scores on a second draw, ``learned.json``
what each learned policy chose and why, and ``saved/`` policies saved in that format, which must
still load and score the same.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from policies import LearnedPolicy, PosthocPolicy, load_policy, simulate

REFERENCE = Path(__file__).parent / "data" / "gain_reference"


@pytest.fixture(autouse=True)
def single_thread():
    """The reference was computed with one thread; gradient boosting's sums follow the thread count."""
    with threadpool_limits(limits=1):
        yield


def three_class(n: int, seed: int):
    """Three class probabilities, a weak-domain flag and a length column, with outcomes."""
    rng = np.random.default_rng(seed)
    logits = 2.5 * rng.standard_normal((n, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    small_correct = rng.random(n) < probabilities.max(axis=1)
    weak = rng.random(n) < 0.3
    expert_correct = rng.random(n) < np.where(weak, 0.5, 0.97)
    features = np.column_stack([probabilities, weak, rng.normal(6.0, 0.8, n)])
    return features, small_correct, expert_correct


def cases():
    """``name -> (unfitted policy, fit arguments, features to score)``."""
    fit, held = simulate(3000, seed=1), simulate(500, seed=2)
    binary = {"features": fit.features, "small_correct": fit.small_correct, "expert_correct": fit.expert_correct}
    with_cost = {**binary, "cost": fit.expert_cost}
    features3, small3, expert3 = three_class(3000, seed=3)
    ternary = {"features": features3, "small_correct": small3, "expert_correct": expert3}
    held3 = three_class(500, seed=4)[0]
    serving_like = np.arange(len(fit)) < 1000
    return {
        "posthoc-logistic": (PosthocPolicy(n_classes=2), binary, held.features),
        "posthoc-logistic-cost": (PosthocPolicy(n_classes=2), with_cost, held.features),
        "posthoc-boosting": (PosthocPolicy(model="gradient-boosting", n_classes=2), binary, held.features),
        "posthoc-boosting-cost": (PosthocPolicy(model="gradient-boosting", n_classes=2), with_cost, held.features),
        "posthoc-three-class": (PosthocPolicy(n_classes=3), ternary, held3),
        "learned-auto": (LearnedPolicy(n_classes=2), binary, held.features),
        "learned-auto-cost": (LearnedPolicy(n_classes=2), with_cost, held.features),
        "learned-forced": (LearnedPolicy(n_classes=2, choice="learned"), binary, held.features),
        "learned-blend": (LearnedPolicy(n_classes=2, choice="blend"), binary, held.features),
        "learned-regularised": (LearnedPolicy(n_classes=2, choice="learned", regularization=0.05), binary,
                                held.features),
        "learned-exchangeable": (LearnedPolicy(n_classes=2), {**binary, "exchangeable": serving_like},
                                 held.features),
        "learned-probabilities-only": (LearnedPolicy(n_classes=2),
                                       {**binary, "features": fit.features[:, :2]}, held.features[:, :2]),
        "learned-few-samples": (LearnedPolicy(n_classes=2),
                                {name: values[:150] for name, values in binary.items()}, held.features),
        "learned-three-class": (LearnedPolicy(n_classes=3, choice="learned"), ternary, held3),
        "learned-three-class-auto": (LearnedPolicy(n_classes=3), ternary, held3),
    }


SAVED = ("posthoc-logistic-cost", "learned-auto", "learned-few-samples")
"""the cases whose fitted policies were saved under ``saved/``"""


@pytest.fixture(scope="module")
def fitted():
    with threadpool_limits(limits=1):
        return {name: (policy.fit(**arguments), held) for name, (policy, arguments, held) in cases().items()}


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE / "scores.npz") as stored:
        return dict(stored)


@pytest.mark.parametrize("name", list(cases()))
def test_scores_are_the_reference(name, fitted, reference):
    policy, held = fitted[name]
    np.testing.assert_allclose(policy.score(held), reference[name], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", [name for name in cases() if name.startswith("learned")])
def test_the_learned_policy_chooses_as_before_for_the_same_reasons(name, fitted):
    policy, _ = fitted[name]
    expected = json.loads((REFERENCE / "learned.json").read_text())[name]
    assert (policy.choice_, policy.choice_reason_) == (expected["choice"], expected["reason"])
    assert _numbers(policy.cv_) == pytest.approx(_numbers(expected["cv"]), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", SAVED)
def test_policies_saved_before_load_and_score_the_same(name, fitted, reference):
    loaded = load_policy(REFERENCE / "saved" / name)
    np.testing.assert_allclose(loaded.score(fitted[name][1]), reference[name], rtol=1e-6, atol=1e-9)


def _numbers(tree) -> list[float]:
    """Every number in a nested dict / list, in a fixed order (keys sorted)."""
    if isinstance(tree, dict):
        return [value for key in sorted(tree) for value in _numbers(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [value for item in tree for value in _numbers(item)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []
