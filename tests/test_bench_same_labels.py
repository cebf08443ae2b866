"""The same-labels benchmark's bookkeeping: which answers are deferred, cascade accuracy, fixed / broken,
the perfect-expert ceiling, the sign test, the seed summary and the conclusion drawn from it."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.benchmarks.bench_same_labels import (
    cascade_accuracy,
    conclusion,
    deferred_mask,
    fixed_broken,
    markdown,
    oracle_accuracy,
    run_row,
    sign_test,
    summarise,
    verdict,
)


def _probs(spam: list[float]) -> np.ndarray:
    p = np.asarray(spam, dtype=float)
    return np.c_[1 - p, p]


# ten mails; the small tier is least confident on 0..3 (spam prob near 0.5), most confident on 4..9
Y = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1, 0])
SMALL = _probs([0.45, 0.55, 0.6, 0.42, 0.99, 0.02, 0.97, 0.9, 0.95, 0.05])
# small answers 0 1 1 0 1 0 1 1 1 0 -> wrong on mails 0 and 2 (least confident) and 7 (confident): 7 / 10 right


def test_the_least_confident_answers_are_deferred_ties_in_sample_order() -> None:
    # top probability: 0.55 0.55 0.6 0.58, then >= 0.9 -> the two least confident are mails 0 and 1
    assert np.flatnonzero(deferred_mask(SMALL, 0.2)).tolist() == [0, 1]
    assert np.flatnonzero(deferred_mask(SMALL, 0.3)).tolist() == [0, 1, 3]
    assert np.flatnonzero(deferred_mask(SMALL, 0.4)).tolist() == [0, 1, 2, 3]
    assert not deferred_mask(SMALL, 0.0).any()
    assert deferred_mask(SMALL, 1.0).all()
    tied = _probs([0.5, 0.5, 0.5, 0.5])
    assert np.flatnonzero(deferred_mask(tied, 0.5)).tolist() == [0, 1]


def test_an_expert_right_exactly_on_the_deferred_errors_fixes_them_all() -> None:
    # defer 40 %: mails 0..3, of which the small tier got 0 and 2 wrong. The expert copies the small tier
    # except on those two, where it is right; elsewhere it is wrong everywhere it can be.
    expert = _probs([0.9, 0.55, 0.1, 0.42, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert fixed_broken(Y, SMALL, expert, 0.4) == (2, 0)
    assert cascade_accuracy(Y, SMALL, expert, 0.4) == pytest.approx(0.9)  # only the confident error (mail 7) left
    assert cascade_accuracy(Y, SMALL, expert, 0.4) == oracle_accuracy(Y, SMALL, 0.4)
    assert np.mean(expert.argmax(1) == Y) == pytest.approx(0.4)  # a bad expert alone, a perfect one where it answers


def test_an_expert_that_flips_every_deferred_answer_breaks_the_right_ones() -> None:
    flipped = SMALL[:, ::-1]
    assert fixed_broken(Y, SMALL, flipped, 0.4) == (2, 2)  # mails 0 and 2 fixed, 1 and 3 broken
    assert cascade_accuracy(Y, SMALL, flipped, 0.4) == pytest.approx(0.7)
    assert fixed_broken(Y, SMALL, flipped, 0.2) == (1, 1)  # mail 0 fixed, mail 1 broken
    assert cascade_accuracy(Y, SMALL, SMALL, 0.3) == pytest.approx(0.7)  # deferring to itself changes nothing
    assert cascade_accuracy(Y, SMALL, flipped, 0.0) == pytest.approx(0.7)


def test_the_perfect_expert_ceiling_counts_only_errors_inside_the_deferred_set() -> None:
    assert oracle_accuracy(Y, SMALL, 0.0) == pytest.approx(0.7)
    assert oracle_accuracy(Y, SMALL, 0.2) == pytest.approx(0.8)  # mail 0 fixed; 1 was right already
    assert oracle_accuracy(Y, SMALL, 0.4) == pytest.approx(0.9)  # 0 and 2; the confident error 7 stays
    assert oracle_accuracy(Y, SMALL, 1.0) == pytest.approx(1.0)


def test_sign_test() -> None:
    assert sign_test(10, 0) == pytest.approx(2 / 2**10)  # two-sided: all ten one way or all the other
    assert sign_test(10, 0) < 0.01
    assert sign_test(0, 10) == sign_test(10, 0)
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert sign_test(0, 0) == 1.0
    assert sign_test(74, 68) > 0.5  # the kNN vote at 50 labels in the study: a coin flip
    assert 0.01 < sign_test(68, 42) < 0.05


def _run(labels: int, seed: int, small: float, expert_cascade: float, fixed: int, broken: int) -> dict:
    return {"labels": labels, "seed": seed, "small": {"accuracy": small, "oracle": 1.0},
            "experts": {"vote": {"accuracy": 0.8, "fixed": fixed, "broken": broken, "seconds": 0.1,
                                 "cascade": {"0.1": expert_cascade, "0.2": expert_cascade, "0.3": expert_cascade}}}}


def test_the_summary_pools_fixed_and_broken_over_seeds_and_keeps_each_seeds_change() -> None:
    runs = [_run(50, 1, 0.90, 0.92, 7, 1), _run(50, 0, 0.80, 0.79, 3, 4), _run(100, 0, 0.9, 0.9, 0, 0)]
    by_labels = {row["labels"]: row for row in summarise(runs)}
    row = by_labels[50]
    assert row["seeds"] == [0, 1]
    assert row["change_per_seed"] == pytest.approx([-1.0, 2.0])
    assert row["change_points"] == pytest.approx(0.5)
    assert (row["fixed"], row["broken"]) == (10, 5)
    assert row["p"] == pytest.approx(sign_test(10, 5))
    assert row["small"] == pytest.approx(0.85)
    assert by_labels[100]["p"] == 1.0 and verdict(by_labels[100]) == "no significant difference"


def test_verdict_and_conclusion_follow_the_numbers() -> None:
    rising = {"alone": 0.99, "cascade": {"0.1": 0.9, "0.2": 0.92, "0.3": 0.94}}
    better = {"labels": 50, "expert": "a", "change_points": 1.5, "fixed": 30, "broken": 5, "p": sign_test(30, 5)}
    worse = {"labels": 50, "expert": "b", "change_points": -1.5, "fixed": 5, "broken": 30, "p": sign_test(5, 30)}
    noise = {"labels": 100, "expert": "a", "change_points": 0.4, "fixed": 12, "broken": 10, "p": sign_test(12, 10)}
    better, worse, noise = (row | rising for row in (better, worse, noise))
    assert [verdict(r) for r in (better, worse, noise)] == ["earns its place", "hurts", "no significant difference"]
    lines = conclusion([better, worse, noise])
    assert lines[0].startswith("- **50 labels**: deferring 20 % earns its place with a (+1.5 points")
    assert "significantly worse: b (-1.5)" in lines[0]
    assert lines[1].startswith("- **100 labels**: no expert beats the small tier significantly")
    assert "2 passed" in lines[-1] and "2 survive Bonferroni" in lines[-1]
    assert "earns its place" not in "".join(conclusion([noise]))
    assert not any("equals its accuracy alone" in line for line in lines)  # the cascade climbs with the rate
    flat = noise | {"alone": 0.9, "cascade": {"0.1": 0.9, "0.2": 0.9, "0.3": 0.9}}
    steep = noise | {"labels": 50, "alone": 0.8, "cascade": {"0.1": 0.9, "0.2": 0.9, "0.3": 0.9}}
    assert any(line.startswith("- a (at 100 labels): the cascade's accuracy at 10, 20 and 30 % equals its accuracy "
                               "alone") for line in conclusion([flat, steep]))


def test_run_row_and_markdown_tables() -> None:
    expert = _probs([0.9, 0.55, 0.1, 0.42, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    row = run_row(Y, SMALL, {"e": expert})
    assert row["small"] == {"accuracy": pytest.approx(0.7), "oracle": pytest.approx(0.8)}
    assert row["experts"]["e"]["cascade"] == {"0.1": pytest.approx(0.8), "0.2": pytest.approx(0.8),
                                              "0.3": pytest.approx(0.8)}
    assert (row["experts"]["e"]["fixed"], row["experts"]["e"]["broken"]) == (1, 0)
    run = {"labels": 50, "seed": 0, "pool": 51, "pool_spam": 16, "test": 10, "test_spam": 5, "calibration_mails": 600,
           **row}
    run["experts"]["e"]["seconds"] = 0.2
    run["small"]["uncalibrated"] = 0.6
    text = markdown({"config": "c.yaml", "small_tier": "calibrated", "budgets": [50], "seeds": [0], "test": 10,
                     "seconds": 1.0, "runs": [run], "summary": summarise([run])})
    assert "Platt calibrator fitted on the held-out fit part (600 mails" in text
    assert "| 50 | e | 0.700 | 0.400 | 0.800 | 0.800 | 0.800 | +10.00 | +10.0 | 1 / 0 | 1.000 | no significant" in text
    assert "| 50 | 0 | 51 (16) | 0.700 | 0.600 | 0.800 | e | 0.400 | 0.800 | 0.800 | 0.800 | 1 | 0 | 0.2 |" in text
