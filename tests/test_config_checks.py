"""Cross-field checks at config load: each problem names the field path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.config import CascadeConfig, ConfigError
from cascade.detectors import MODALITY, ONE_CLASS, detector_class

ROWS = "a,b,colour,label\n" + "".join(f"{i},{i % 5},{'red' if i % 3 else 'blue'},{('x', 'y', 'z')[i % 3]}\n"
                                      for i in range(30))


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text(ROWS)
    return path


def load(tmp_path: Path, text: str) -> CascadeConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return CascadeConfig.from_yaml(path)


@pytest.mark.parametrize(("body", "message"), [
    ("dataset: {name: spamassassin}\ndetector: {kind: isolation-forest}\n",
     "  detector.kind: 'isolation-forest' takes feature rows, but dataset 'spamassassin' holds text; "
     "for text use one of embedding-knn"),
    ("dataset: {name: shuttle}\ndetector: {kind: tfidf-lr}\nexpert: {labels: [normal, anomaly]}\n",
     "  detector.kind: 'tfidf-lr' takes text, but dataset 'shuttle' holds feature rows; for feature rows use one of "
     "isolation-forest, pyod, tabular-hgb, tabular-lr"),
    ("dataset: {name: spamassassin}\nexpert: {labels: [ham, spam, phishing]}\n",
     "  expert.labels: 3 label words ['ham', 'spam', 'phishing'] for the 2 classes of dataset 'spamassassin' "
     "(ham, spam); give one word per class"),
    ("dataset: {name: spamassassin}\ncontrol_expert: {kind: cnn}\n", "  control_expert.kind: 'cnn' judges images"),
    ("dataset: {name: nope}\n", "  dataset.name: unknown dataset 'nope'"),
])
def test_sections_that_disagree_are_named(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body)
    assert message in str(info.value)


def test_user_file_problems_name_the_dataset_field(tmp_path: Path, table: Path) -> None:
    cases = [
        (f"dataset: {{name: csv, path: {tmp_path / 'absent.csv'}}}\n", "  dataset.path: no such data file"),
        (f"dataset: {{name: csv, path: {table}, label_column: kind}}\n", "  dataset.label_column: no column 'kind'"),
        (f"dataset: {{name: csv, path: {table}, feature_columns: [a, size]}}\n",
         "  dataset.feature_columns: no column ['size']"),
        (f"dataset: {{name: csv, path: {table}}}\ndetector: {{kind: tabular-lr}}\n",
         "  expert.labels: 2 label words ['ham', 'spam'] for the 3 classes of dataset"),
        (f"dataset: {{name: csv, path: {table}}}\ndetector: {{kind: pyod}}\nexpert: {{labels: [x, y, z]}}\n",
         "  detector.kind: 'pyod' learns from normal samples only and needs two classes"),
    ]
    for body, message in cases:
        with pytest.raises(ConfigError) as info:
            load(tmp_path, body)
        assert message in str(info.value), body


def test_a_consistent_user_file_config_loads(tmp_path: Path, table: Path) -> None:
    config = load(tmp_path, f"dataset: {{name: csv, path: {table}, positive_label: z}}\n"
                            "detector: {kind: pyod, params: {model: ECOD}}\nexpert: {kind: knn-vote, shots: 4}\n")
    assert config.detector.params == {"model": "ECOD"}


def test_modality_table_matches_the_detector_classes() -> None:
    for kind, modality in MODALITY.items():
        cls = detector_class(kind)
        assert cls.modality == modality, kind
        assert cls.one_class == (kind in ONE_CLASS), kind


@pytest.mark.parametrize("module", ["cascade.checks", "cascade.data.columns"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_passes_the_cross_field_checks(path: Path) -> None:
    assert CascadeConfig.from_yaml(path).name


def test_a_hard_cap_on_an_accepted_error_budget_is_refused_at_load_unless_it_may_override() -> None:
    from cascade.config import CascadeConfig, ConfigError

    budget = {"kind": "accepted-error", "target": 0.02, "delta": 0.1, "hard_cap": 0.1}
    with pytest.raises(ConfigError, match="budget.hard_cap: a hard cap makes the small tier answer"):
        CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "budget": budget})
    allowed = CascadeConfig.from_dict({"dataset": {"name": "spamassassin"},
                                       "budget": {**budget, "cap_overrides_certificate": True}})
    assert allowed.budget.served_rule == "certified"


def test_a_rate_target_above_the_hard_cap_is_refused_at_load() -> None:
    from cascade.config import CascadeConfig, ConfigError

    with pytest.raises(ConfigError, match="budget.target: a deferral-rate target of 0.2 is above budget.hard_cap 0.1"):
        CascadeConfig.from_dict({"dataset": {"name": "spamassassin"},
                                 "budget": {"kind": "rate", "target": 0.2, "hard_cap": 0.1}})
