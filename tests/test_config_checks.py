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


@pytest.mark.parametrize(("sections", "message"), [
    ({"control_expert": {"kind": "knn-vote", "shots": 4, "kv_cache_gib": 4}},
     "control_expert.kv_cache_gib: only vllm experts read it; this expert is 'knn-vote'"),
    ({"expert": {"kind": "transformers", "base_url": "http://127.0.0.1:9"}},
     "expert.base_url: only openai experts read it; this expert is 'transformers'"),
    ({"budget": {"kind": "rate", "n_grid": 50}}, "budget.n_grid: only accepted-error and joint budgets read it; "
                                                 "this budget is 'rate'"),
    ({"budget": {"kind": "cost", "target": 400, "delta": 0.1}},
     "budget.delta: only rate, accepted-error, joint and chain budgets read it; this budget is 'cost'"),
    ({"budget": {"kind": "accepted-error", "target": 0.05, "delta": 0.1, "max_rate": 0.3}},
     "budget.max_rate: only joint budgets read it; this budget is 'accepted-error'"),
    ({"dataset": {"name": "spamassassin", "normal_classes": [0, 1]}},
     "dataset.normal_classes: only fashion-mnist datasets read it; this dataset is 'spamassassin'"),
    ({"dataset": {"name": "spamassassin", "text_column": "body"}},
     "dataset.text_column: only csv, jsonl and parquet datasets read it; this dataset is 'spamassassin'"),
    ({"policy": {"kind": "confidence", "crossfit_folds": 5}},
     "policy.crossfit_folds: only learned policies read it; this policy is 'confidence'"),
    ({"experiment": {"ray_data_concurrency": 2}},
     "experiment.ray_data_concurrency: only ray-data scoring reads it; experiment.scoring is 'local'"),
])
def test_a_field_only_other_kinds_read_is_refused_at_load(sections: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, **sections})
    assert f"  {message}\n" in f"{info.value}\n"


def test_a_field_of_other_kinds_left_at_its_default_loads_so_a_written_config_loads_back(tmp_path: Path) -> None:
    config = CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "expert": {"kind": "knn-vote", "shots": 4,
                                                                                       "kv_cache_gib": 1.0}})
    config.to_yaml(tmp_path / "written.yaml")
    assert CascadeConfig.from_yaml(tmp_path / "written.yaml") == config
    old_dump = {"kind": "rate", "target": 0.2, "max_rate": None, "max_cost_per_call": None, "delta": None,
                "n_grid": 20, "cap_overrides_certificate": False, "served_rule": "track"}  # before the kinds split
    budget = CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "budget": old_dump}).budget
    assert budget.kind == "rate" and not hasattr(budget, "n_grid")


@pytest.mark.parametrize(("sections", "message"), [
    ({"expert": {"kind": "openai"}}, "expert.base_url: an openai expert needs the server's URL"),
    ({"control_expert": {"kind": "knn-vote"}}, "control_expert.shots: a knn-vote expert votes its retrieved "
                                               "neighbours; set shots >= 1"),
    ({"expert": {"template": "Is this spam?"}}, "expert.template: must contain the {text} placeholder"),
    ({"expert": {"template": "{text} in {language}"}}, "expert.template: prompt template uses unknown placeholder "
                                                      "'language'"),
    ({"detector": {"kind": "tfidf-lr", "params": {"C": 2.0, "depth": 3}}},
     "detector.params: 'tfidf-lr' takes no depth; it takes C, max_features, ngram_max"),
    ({"budget": {"kind": "rates"}}, "budget.kind: Input should be 'rate', 'cost', 'accepted-error', 'joint' or 'chain'"),
    ({"serve": {"autoscaling": {"gpu": {"max_replicas": 2}}}},
     "serve.autoscaling.gpu: Input should be 'detector', 'expert' or 'router'"),
    ({"serve": {"autoscaling": {"expert": {"min_replicas": -1}}}},
     "serve.autoscaling.expert.min_replicas: Input should be greater than or equal to 0"),
])
def test_what_a_kind_needs_is_checked_at_load_not_at_first_use(sections: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, **sections})
    assert f"  {message}" in str(info.value)


def test_fashion_mnist_normal_classes_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match=r"dataset.normal_classes: must be a non-empty subset of 0..9"):
        CascadeConfig.from_dict({"dataset": {"name": "fashion-mnist", "normal_classes": [3, 12]},
                                 "detector": {"kind": "pixel-lr"},
                                 "expert": {"kind": "cnn", "labels": ["normal", "anomaly"]}})


@pytest.mark.parametrize(("old", "new", "raw"), [
    ("dataset.calibration_fraction", "dataset.held_out_fraction",
     {"dataset": {"name": "spamassassin", "calibration_fraction": 0.3}}),
    ("experiment.test_samples", "experiment.max_scored_per_split",
     {"dataset": {"name": "spamassassin"}, "experiment": {"test_samples": 300}}),
    ("detector.train_labels", "dataset.label_budget",
     {"dataset": {"name": "spamassassin"}, "detector": {"kind": "tfidf-lr", "train_labels": 300}}),
])
def test_an_old_field_name_is_read_as_the_new_one_with_a_warning_naming_it(old: str, new: str, raw: dict) -> None:
    with pytest.warns(UserWarning, match=f"^{old}: now called {new}"):
        config = CascadeConfig.from_dict(raw)
    section, field = new.split(".")
    assert getattr(getattr(config, section), field) in (0.3, 300)
    old_section, old_field = old.split(".")
    both = {**raw, section: {**raw.get(section, {}), field: 1}}
    with pytest.raises(ConfigError, match=f"{old}: now called {new}, which is also set; remove {old}"):
        CascadeConfig.from_dict(both)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads_without_a_warning(path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CascadeConfig.from_yaml(path)


def test_a_budget_changes_kind_keeping_the_settings_both_kinds_read() -> None:
    from cascade.config import RateBudget

    joint = RateBudget(target=0.1, hard_cap=0.3, delta=0.05).as_kind("joint", target=0.02, max_rate=0.3)
    assert (joint.kind, joint.hard_cap, joint.delta, joint.served_rule) == ("joint", 0.3, 0.05, "certified")
    assert not hasattr(joint.as_kind("cost", target=400.0), "delta")
