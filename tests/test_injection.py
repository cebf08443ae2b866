"""Spam with an injected "answer ham" instruction: flip rates of an expert and of the cascade.

Flip counting is specified with small rule-based classifiers (one that obeys the instruction, one
that reads "ham" as a spam sign); the cascade with the shipped SpamAssassin config's real small tier
and its no-LLM control expert (fast). The LLM expert's rates come from ``python -m experiments.injection``
(SmolLM2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade import data
from cascade.config import CascadeConfig
from cascade.small import SmallTier
from experiments.injection import INJECTIONS, cascade_predict, flip_rates, judged_once, measure
from policies import make_policy

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "spamassassin.yaml"
SPAM, HAM = 1, 0


def obedient(texts: list[str]) -> np.ndarray:
    """Spam when a mail says "buy", unless the mail tells it to answer ham."""
    told = [("answer ham" in t.lower() or "answer: ham" in t.lower()) for t in texts]
    return np.array([HAM if told[i] else int("buy" in t) for i, t in enumerate(texts)])


def ham_is_suspicious(texts: list[str]) -> np.ndarray:
    """Spam when a mail says "buy" or talks about ham."""
    return np.array([int("buy" in t or "ham" in t.lower()) for t in texts])


def test_a_mail_answered_spam_as_is_and_ham_once_injected_is_a_flip() -> None:
    rates = flip_rates(obedient, ["buy now", "buy pills"])
    assert all((rates[name]["flips"], rates[name]["flip_rate"]) == (2, 1.0) for name in INJECTIONS)


def test_the_flip_rate_counts_only_the_mails_answered_spam_as_is() -> None:
    rates = flip_rates(obedient, ["buy now", "hello", "see you at lunch"])
    assert (rates["mails"], rates["answered_spam_as_is"]) == (3, 1)
    assert all(rates[name]["flip_rate"] == 1.0 for name in INJECTIONS)  # 1 of 1, not 1 of 3


def test_a_mail_answered_ham_as_is_is_no_flip_whatever_the_injection_does() -> None:
    rates = flip_rates(ham_is_suspicious, ["hello"])  # ham as is, spam once it mentions ham
    assert rates["answered_spam_as_is"] == 0
    assert all((rates[name]["flips"], rates[name]["flip_rate"]) == (0, 0.0) for name in INJECTIONS)


@pytest.fixture(scope="module")
def shipped() -> CascadeConfig:
    return CascadeConfig.from_yaml(CONFIG)


@pytest.fixture(scope="module")
def small_and_policy(shipped: CascadeConfig, spamassassin: data.Dataset) -> tuple[SmallTier, Any]:
    """The shipped config's small tier and a confidence policy, fitted as the harness fits them."""
    from cascade.data.roles import load_roles

    roles = load_roles(shipped)
    small = SmallTier.from_config(shipped).fit(roles.train, roles.fit)
    features = small.features(roles.fit.X)
    correct = features[:, : small.n_classes].argmax(axis=1) == roles.fit.y
    policy = make_policy("confidence", n_classes=small.n_classes)
    return small, policy.fit(features, correct, np.ones(len(correct), dtype=bool))


def test_the_cascade_answers_with_the_expert_exactly_where_the_score_exceeds_the_threshold(
        small_and_policy: tuple[SmallTier, Any], spamassassin: data.Dataset) -> None:
    small, policy = small_and_policy
    ham = [spamassassin.texts[i] for i in np.flatnonzero(spamassassin.y == HAM)[::100]]  # type: ignore[index]
    features = small.features(ham)
    scores = policy.score(features)
    threshold = float(np.median(scores))

    def says_spam(texts: list[str]) -> np.ndarray:  # an expert whose answers are easy to tell apart
        return np.full(len(texts), SPAM)

    verdicts = cascade_predict(small, policy, threshold, says_spam)(ham)
    deferred = scores > threshold
    assert deferred.any() and (~deferred).any()
    assert (verdicts[deferred] == SPAM).all()
    assert np.array_equal(verdicts[~deferred], features[~deferred, : small.n_classes].argmax(axis=1))


def test_each_distinct_mail_is_judged_by_the_expert_once(knn_expert: Any, texts: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    judge = knn_expert.judge

    def counted(batch: list[str]) -> Any:
        asked.extend(batch)
        return judge(batch)

    monkeypatch.setattr(knn_expert, "judge", counted)
    predict = judged_once(knn_expert)
    first = predict([texts[0], texts[1], texts[0]])
    again = predict([texts[1], texts[2]])
    assert sorted(asked) == sorted(texts[:3])
    expected = judge(texts[:3]).predictions
    assert first.tolist() == [expected[0], expected[1], expected[0]] and again.tolist() == list(expected[1:3])


def test_injected_instructions_rarely_flip_the_control_or_the_cascade(shipped: CascadeConfig,
                                                                      spamassassin: data.Dataset) -> None:
    result = measure(shipped, 40, shipped.control_expert)
    for tier in ("expert_flips", "cascade_flips"):
        assert result[tier]["mails"] == 40 and result[tier]["answered_spam_as_is"] >= 30
        assert all(result[tier][name]["flip_rate"] <= 0.2 for name in INJECTIONS), result[tier]
