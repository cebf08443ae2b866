"""Online controller: quantile tracking under drift, a hard cap no burst can break, run-time targets."""

import numpy as np
import pytest

from policies import OnlineController


def max_deferrals_in_any_window(mask, window):
    counts = np.concatenate([[0], np.cumsum(mask)])
    return int((counts[window:] - counts[:-window]).max()) if len(mask) >= window else int(mask.sum())


def feed(controller, scores, rng, max_batch):
    """Serve ``scores`` in arrival order as random batches of 1..max_batch requests."""
    masks, start = [], 0
    while start < len(scores):
        size = int(rng.integers(1, max_batch + 1))
        masks.append(controller.decide(scores[start:start + size]))
        start += size
    return np.concatenate(masks)


def test_hard_cap_is_never_exceeded_under_bursts():
    rng = np.random.default_rng(0)
    calm = rng.normal(0, 1, 30000)
    burst = np.zeros(30000, dtype=bool)
    for start in rng.integers(0, 29000, 12):
        burst[start:start + rng.integers(100, 1000)] = True
    scores = np.where(burst, 50.0, calm)
    controller = OnlineController(target=0.1, threshold=1.28, learning_rate=0.01, hard_cap=0.2, window=500)
    mask = feed(controller, scores, rng, max_batch=700)
    assert max_deferrals_in_any_window(mask, 500) <= 100
    assert max_deferrals_in_any_window(mask, 500) >= 90


def test_a_capped_batch_defers_its_highest_scores():
    controller = OnlineController(target=0.1, threshold=0.0, hard_cap=0.1, window=50)
    scores = np.linspace(1, 2, 20)
    assert np.flatnonzero(controller.decide(scores)).tolist() == list(range(15, 20))


def test_realised_rate_tracks_the_target_under_drift():
    rng = np.random.default_rng(1)
    scores = rng.normal(np.linspace(0, 3, 60000), 1.0)
    controller = OnlineController(target=0.15, threshold=1.0, learning_rate=0.005, window=2000)
    mask = feed(controller, scores, rng, max_batch=64)
    late = mask[-20000:]
    assert late.mean() == pytest.approx(0.15, abs=0.02)
    assert np.mean(scores[-20000:] > 1.0) > 0.8


def test_target_can_change_at_run_time():
    rng = np.random.default_rng(2)
    controller = OnlineController(target=0.1, threshold=1.28, learning_rate=0.005, window=2000)
    feed(controller, rng.normal(0, 1, 10000), rng, max_batch=32)
    controller.set_target(0.3)
    mask = feed(controller, rng.normal(0, 1, 20000), rng, max_batch=32)
    assert mask[-10000:].mean() == pytest.approx(0.3, abs=0.02)


def test_state_reports_target_threshold_window_rate_and_cap():
    controller = OnlineController(target=0.2, threshold=0.5, learning_rate=0.1, hard_cap=0.25, window=8)
    controller.decide([0.9, 0.1, 0.8, 0.2])
    state = controller.state()
    assert state["target"] == 0.2 and state["window"] == 8 and state["decisions"] == 4
    assert state["realised_rate"] == 0.5 and state["window_deferrals"] == 2
    assert state["threshold"] == pytest.approx(0.5 + 0.1 * (2 - 0.2 * 4))
    assert state["cap_window_deferrals"] == 2 and state["cap_remaining"] == 0


def test_single_request_batches_behave_like_one_batch_without_a_cap():
    scores = np.random.default_rng(3).random(200)
    one_by_one = OnlineController(target=0.2, threshold=0.5, learning_rate=1e-9)
    batched = OnlineController(target=0.2, threshold=0.5, learning_rate=1e-9)
    assert np.array_equal(np.concatenate([one_by_one.decide([s]) for s in scores]), batched.decide(scores))


def test_target_above_the_hard_cap_is_refused():
    controller = OnlineController(target=0.1, hard_cap=0.2)
    with pytest.raises(ValueError, match="exceeds the hard cap"):
        controller.set_target(0.3)


def test_starting_threshold_must_be_finite():
    with pytest.raises(ValueError, match="must be finite"):
        OnlineController(target=0.1, threshold=float("inf"))


# The certificate vs the controller: clamps, ties and which guarantee is in force (issue 13, item 5).

def drifting_scores(rng, n=20000, shift=-1.0):
    """Deferral scores whose distribution slides by ``shift`` over the stream."""
    return rng.normal(0, 1, n) + np.linspace(0, shift, n)


@pytest.mark.parametrize("shift", [-1.5, 1.5])
def test_an_accepted_error_budget_never_accepts_more_than_certified_under_drift(shift):
    scores = drifting_scores(np.random.default_rng(3), shift=shift)
    controller = OnlineController(target=0.2, threshold=0.84, learning_rate=0.01, max_threshold=0.84)
    thresholds = []
    for start in range(0, len(scores), 50):
        controller.decide(scores[start:start + 50])
        thresholds.append(controller.threshold)
    assert max(thresholds) <= 0.84
    if shift > 0:   # higher scores want a higher threshold (defer less), which the clamp refuses
        assert thresholds[-1] == 0.84
    else:           # lower scores: the controller may defer more, below the certified threshold
        assert min(thresholds) < 0.0


def test_a_cost_budget_never_defers_more_than_certified_under_drift():
    rng = np.random.default_rng(4)
    controller = OnlineController(target=0.2, threshold=0.84, learning_rate=0.01, min_threshold=0.84)
    scores = drifting_scores(rng, shift=1.5)
    certified = scores > 0.84
    mask = np.concatenate([controller.decide(scores[s:s + 50]) for s in range(0, len(scores), 50)])
    assert not (mask & ~certified).any() and controller.threshold >= 0.84


def test_a_joint_budget_keeps_its_certified_threshold():
    controller = OnlineController(target=0.2, threshold=0.5, learning_rate=0.05, min_threshold=0.5, max_threshold=0.5)
    controller.decide(np.random.default_rng(5).normal(2, 1, 500))
    assert controller.threshold == 0.5


def test_the_controller_breaks_ties_with_the_certificate_rule():
    from policies.ties import defer_mask, tie_keys

    texts = [f"request {i}" for i in range(400)]
    scores = np.full(400, 0.5)
    controller = OnlineController(target=0.3, threshold=0.5, learning_rate=1e-9, tie_break=0.7, tie_seed=2)
    mask = controller.decide(scores, texts)
    assert np.array_equal(mask, defer_mask(scores, 0.5, 0.7, tie_keys(texts, 2)))
    assert 0.2 < mask.mean() < 0.4


def test_the_served_guarantee_says_whether_the_certificate_covers_the_threshold_now():
    from policies import guarantee_now

    certificate = {"statement": "P(accepted_error > 0.05) ≤ 0.1"}
    rng = np.random.default_rng(6)
    rate = OnlineController(target=0.1, threshold=0.0, learning_rate=0.01)
    assert guarantee_now("rate", certificate, rate.state())["status"] == "certified"
    rate.decide(rng.normal(0, 1, 2000))
    moved = guarantee_now("rate", certificate, rate.state())
    assert moved["status"] == "tracking" and "not the current" in moved["statement"]
    error = OnlineController(target=0.1, threshold=0.0, learning_rate=0.01, max_threshold=0.0)
    error.decide(rng.normal(0, 1, 2000))   # a 50 % rate wants the threshold up: clamped, still certified
    assert guarantee_now("accepted-error", certificate, error.state())["status"] == "certified"
    error.set_target(0.9)
    error.decide(rng.normal(0, 1, 2000))
    assert guarantee_now("accepted-error", certificate, error.state())["status"] == "defers-more"
    assert guarantee_now("rate", None, rate.state())["status"] == "uncertified"


def test_a_starting_threshold_outside_the_clamp_is_refused():
    with pytest.raises(ValueError, match="outside the clamp"):
        OnlineController(target=0.1, threshold=1.0, max_threshold=0.5)
