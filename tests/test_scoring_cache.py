"""The score-once cache: keyed by everything that changes an expert's answers, checked on load,
stale entries recomputed and never reused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cascade import scoring
from cascade.config import ExpertConfig
from cascade.experts import fingerprint as fp
from cascade.experts.fingerprint import expert_fingerprint
from cascade.scoring import TierScores, cached, content_hash


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(scoring, "cache_dir", lambda name=None: tmp_path)
    return tmp_path


def _scores(value: float, ids: tuple[str, ...] = ("a", "b")) -> TierScores:
    n = len(ids)
    return TierScores(tier="expert", ids=np.array(ids), y=np.zeros(n, dtype=np.int64),
                      probs=np.tile([1 - value, value], (n, 1)), cost=np.ones(n), latency_s=np.zeros(n),
                      prompt_tokens=np.full(n, 10), completion_tokens=np.ones(n))


class _Counter:
    def __init__(self, value: float) -> None:
        self.value, self.calls = value, 0

    def __call__(self) -> TierScores:
        self.calls += 1
        return _scores(self.value)


LLM = ExpertConfig(kind="transformers", model="some-model", shots=4, dtype="bfloat16")


@pytest.mark.parametrize("change", [
    {"template": "Spam? {text}"}, {"shots": 2}, {"shot_max_tokens": 64}, {"max_input_tokens": 100},
    {"labels": ["normal", "spam"]}, {"model": "other-model"}, {"dtype": "float32"}, {"kind": "vllm"},
])
def test_every_answer_changing_field_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert expert_fingerprint(LLM.model_copy(update=change), "text") != expert_fingerprint(LLM, "text")


def test_fields_that_do_not_change_answers_keep_the_fingerprint() -> None:
    same = LLM.model_copy(update={"timeout_s": 99.0, "max_retries": 7, "api_key_env": "KEY", "retry_backoff_s": 2.0})
    assert expert_fingerprint(same, "text") == expert_fingerprint(LLM, "text")


def test_auto_dtype_is_keyed_by_the_type_it_resolves_to_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from cascade.experts import dtype as dtypes

    auto = LLM.model_copy(update={"dtype": "auto"})
    monkeypatch.setattr(dtypes, "_cuda_half_type", lambda: None)
    monkeypatch.setattr(dtypes, "_cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    on_bf16_cpu = expert_fingerprint(auto, "text")
    assert on_bf16_cpu == expert_fingerprint(LLM, "text")  # the same numbers as an explicit bfloat16
    monkeypatch.setattr(dtypes, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert expert_fingerprint(auto, "text") == expert_fingerprint(LLM.model_copy(update={"dtype": "float32"}), "text")
    assert expert_fingerprint(auto, "text") != on_bf16_cpu  # scores from a bf16 machine are not reused


def test_prompt_format_library_versions_and_modality_are_in_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    before = expert_fingerprint(LLM, "text")
    assert expert_fingerprint(LLM, "features") != before  # another template preset
    monkeypatch.setattr(fp, "PROMPT_FORMAT", fp.PROMPT_FORMAT + 1)
    assert expert_fingerprint(LLM, "text") != before
    monkeypatch.undo()
    monkeypatch.setattr(fp, "_version", lambda name: "99.0")
    assert expert_fingerprint(LLM, "text") != before


def test_the_model_identity_follows_the_model_files(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 64}')
    (folder / "tokenizer_config.json").write_text('{"chat_template": "A"}')
    first = fp.model_identity(str(folder))
    (folder / "tokenizer_config.json").write_text('{"chat_template": "B"}')  # same size, other chat template
    assert fp.model_identity(str(folder)) != first


def test_an_entry_is_reused_only_for_the_same_fingerprint_and_samples(cache: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    key = content_hash("test")
    a, b = expert_fingerprint(LLM, "text"), expert_fingerprint(LLM.model_copy(update={"shots": 2}), "text")
    first = _Counter(0.9)
    cached(key, first, fingerprint=a, ids=np.array(["a", "b"]))
    again = _Counter(0.1)
    scores, hit = cached(key, again, fingerprint=a, ids=np.array(["a", "b"]))
    assert hit and again.calls == 0 and scores.probs[0, 1] == pytest.approx(0.9)
    with caplog.at_level(logging.WARNING, logger="cascade.scoring"):
        scores, hit = cached(key, again, fingerprint=b, ids=np.array(["a", "b"]))
    assert not hit and again.calls == 1 and scores.probs[0, 1] == pytest.approx(0.1)
    assert "another expert fingerprint" in caplog.text
    other = _Counter(0.5)
    scores, hit = cached(key, other, fingerprint=b, ids=np.array(["a", "c"]))
    assert not hit and other.calls == 1


def test_an_entry_of_an_older_cache_format_is_recomputed(cache: Path) -> None:
    key = content_hash("old")
    cached(key, _Counter(0.9))
    meta = json.loads((cache / f"{key}.json").read_text())
    (cache / f"{key}.json").write_text(json.dumps({**meta, "cache_format": scoring.CACHE_FORMAT - 1}))
    fresh = _Counter(0.2)
    scores, hit = cached(key, fresh)
    assert not hit and fresh.calls == 1 and scores.probs[0, 1] == pytest.approx(0.2)


def test_a_damaged_entry_is_recomputed(cache: Path) -> None:
    key = content_hash("damaged")
    cached(key, _Counter(0.9))
    (cache / f"{key}.safetensors").write_bytes(b"not safetensors")
    fresh = _Counter(0.3)
    _, hit = cached(key, fresh)
    assert not hit and fresh.calls == 1
