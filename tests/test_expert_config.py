"""Every expert knob is a validated `expert.*` field that reaches the engine it configures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.config import CascadeConfig, ConfigError, ExpertConfig
from cascade.experts import make_expert


def _config(tmp_path: Path, expert_yaml: str) -> CascadeConfig:
    path = tmp_path / "config.yaml"
    path.write_text(f"dataset: {{name: spamassassin}}\nexpert:\n{expert_yaml}")
    return CascadeConfig.from_yaml(path)


def test_yaml_knobs_reach_the_transformers_expert(tmp_path: Path, tiny_llama: Path) -> None:
    config = _config(tmp_path, f"  kind: transformers\n  model: {tiny_llama}\n  dtype: float32\n"
                               "  max_model_len: 1024\n  max_input_tokens: 100\n  shot_max_tokens: 40\n"
                               "  explain_max_tokens: 20\n  batch_size: 3\n")
    with make_expert(config.expert) as expert:
        assert (expert.max_input_tokens, expert.shot_max_tokens, expert.explain_max_tokens) == (100, 40, 20)
        assert expert.engine.batch_size == 3


def test_yaml_knobs_reach_the_vllm_engine_arguments(tmp_path: Path, tiny_llama: Path) -> None:
    config = _config(tmp_path, f"  kind: vllm\n  model: {tiny_llama}\n  max_model_len: 1024\n"
                               "  enforce_eager: false\n  prefix_caching: false\n")
    expert = make_expert(config.expert)  # the engine starts on first use, so nothing runs here
    assert expert.engine.engine_args["enforce_eager"] is False
    assert expert.engine.engine_args["enable_prefix_caching"] is False


def test_openai_expert_sends_the_key_from_the_named_variable_as_a_bearer_token(
        tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_TEST_LLM_KEY", "s3cret")
    config = _config(tmp_path, f"  kind: openai\n  model: {tiny_llama}\n  max_model_len: 1024\n"
                               "  base_url: http://127.0.0.1:9\n  served_model_name: big-model\n"
                               "  api_key_env: CASCADE_TEST_LLM_KEY\n  retry_backoff_s: 0.1\n")
    assert "s3cret" not in config.model_dump_json()  # the config holds the variable's name only
    with make_expert(config.expert) as expert:
        assert expert.engine._headers == {"Authorization": "Bearer s3cret"}
        assert (expert.engine.model, expert.engine.backoff_s) == ("big-model", 0.1)


def test_an_unset_api_key_variable_fails_naming_the_field(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_TEST_LLM_KEY", raising=False)
    config = ExpertConfig(kind="openai", model=str(tiny_llama), max_model_len=1024, base_url="http://127.0.0.1:9",
                          api_key_env="CASCADE_TEST_LLM_KEY")
    with pytest.raises(ValueError, match="expert.api_key_env .* CASCADE_TEST_LLM_KEY, which is not set"):
        make_expert(config)


@pytest.mark.parametrize(("expert_yaml", "field"), [
    ("  api_key_env: 'sk-abc 123'\n", "expert.api_key_env"),
    ("  shot_max_tokens: 0\n", "expert.shot_max_tokens"),
    ("  batch_size: -1\n", "expert.batch_size"),
    ("  enforce_eager: maybe\n", "expert.enforce_eager"),
    ("  model: ''\n", "expert.model"),
    ("  labels: [spam]\n", "expert.labels"),
    ("  vote_smoothing: 0\n", "expert.vote_smoothing"),
])
def test_invalid_expert_knobs_are_named_by_path(tmp_path: Path, expert_yaml: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        _config(tmp_path, expert_yaml)


def test_a_local_model_folder_is_accepted_and_shown_by_its_folder_name(tiny_llama: Path) -> None:
    config = ExpertConfig(kind="transformers", model=str(tiny_llama), max_model_len=1024, shots=2)
    assert config.display_name == f"transformers:{tiny_llama.name} (2-shot)"
    assert str(tiny_llama.parent) not in config.display_name


def test_the_vote_control_is_not_named_after_an_llm_it_does_not_use() -> None:
    name = ExpertConfig(kind="knn-vote", shots=4).display_name
    assert "smollm2" not in name and "no LLM" in name and "k=4" in name


def test_the_default_prompt_caps_are_the_shipped_compact_prompt() -> None:
    shipped = CascadeConfig.from_yaml(Path(__file__).resolve().parents[1] / "experiments" / "configs"
                                      / "spamassassin.yaml").expert
    default = ExpertConfig()
    assert (shipped.shots, shipped.shot_max_tokens, shipped.max_input_tokens) == (6, 8, 48)
    assert (default.shot_max_tokens, default.max_input_tokens) == (shipped.shot_max_tokens, shipped.max_input_tokens)


@pytest.mark.parametrize(("expert_yaml", "message"), [
    ("  kind: knn-vote\n  shots: 4\n  kv_cache_gib: 4\n", "expert.kv_cache_gib: only vllm experts read it; this "
                                                         "expert is 'knn-vote'"),
    ("  kind: vllm\n  timeout_s: 5\n", "expert.timeout_s: only openai experts read it; this expert is 'vllm'"),
    ("  kind: openai\n", "expert.base_url: an openai expert needs the server's URL"),
])
def test_expert_fields_are_checked_per_kind_at_load(tmp_path: Path, expert_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, expert_yaml)
