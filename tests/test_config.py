"""CascadeConfig: YAML in, validated; bad fields are named with their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.config import CascadeConfig, ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "spamassassin.yaml"


def test_the_shipped_spamassassin_config_loads() -> None:
    config = CascadeConfig.from_yaml(EXAMPLE)
    assert config.dataset.name == "spamassassin"
    assert config.expert.model == "smollm2-135m-instruct"


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = CascadeConfig.from_yaml(EXAMPLE)
    config.to_yaml(tmp_path / "copy.yaml")
    assert CascadeConfig.from_yaml(tmp_path / "copy.yaml") == config


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("dataset: {name: spamassassin}\ndetector: {kind: bert}\n", "detector.kind"),
        ("dataset: {name: spamassassin}\nbudget: {target: -1}\n", "budget.target"),
        ("dataset: {name: spamassassin}\nserve: {port: 99999}\n", "serve.port"),
        ("dataset: {name: spamassassin}\ncost: {expert_per_call: -2}\n", "cost.expert_per_call"),
        ("dataset: {name: spamassassin}\nexpert: {shots: 4, shotz: 2}\n", "expert.shotz"),
        ("detector: {kind: tfidf-lr}\n", "dataset: Field required"),
        ("dataset: {name: csv}\n", "needs a path"),
        ("dataset: {name: spamassassin, train_fraction: 0.9, held_out_fraction: 0.2}\n", "room for a test split"),
    ],
)
def test_invalid_fields_are_named_by_path(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        CascadeConfig.from_yaml(path)
    assert str(path) in str(info.value)


def test_malformed_yaml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        CascadeConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="no such config file"):
        CascadeConfig.from_yaml(tmp_path / "absent.yaml")
