"""The README's "Your own data" path: a CSV -> `cascade init` -> `cascade experiment run` -> served app.

The table is scikit-learn's bundled breast-cancer data written as a CSV with string labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner

from cascade.cli import app, explain_error
from cascade.config import CascadeConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory holding ``tumours.csv``, with its own cascade home for caches."""
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 0, "malignant", "benign")
    frame.to_csv(tmp_path / "tumours.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    return tmp_path


def test_init_writes_a_commented_config_that_experiment_run_accepts(workdir: Path) -> None:
    runner = CliRunner()
    written = runner.invoke(app, ["init", "tumours.csv", "--label", "diagnosis"])
    assert written.exit_code == 0, written.output
    said = written.output.splitlines()[0]
    assert said.startswith("tumours.csv: 569 rows, label 'diagnosis' with 2 classes (benign, malignant; "
                           "anomaly = 'malignant'); features: 30 numeric (mean radius, ")
    assert said.endswith("[inferred]")
    text = (workdir / "cascade.yaml").read_text()
    assert "# tumours.csv: 569 rows, label 'diagnosis' with 2 classes (benign, malignant; anomaly = 'malignant')" in text
    config = CascadeConfig.from_yaml(workdir / "cascade.yaml")
    assert (config.detector.kind, config.calibrator.kind, config.expert.kind) == ("tabular-lr", "platt", "knn-vote")
    assert config.expert.labels == ["benign", "malignant"]

    ran = runner.invoke(app, ["experiment", "run", "cascade.yaml"])
    assert ran.exit_code == 0, ran.output
    out = workdir / "results" / "tumours"
    assert (out / "frontier_defer.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert sum(results["data"][part]["samples"] for part in ("train", "fit", "certify", "test")) == 569
    assert results["tiers"]["small"]["auroc"] > 0.95
    assert runner.invoke(app, ["init", "tumours.csv", "--label", "diagnosis"]).exit_code != 0  # no overwrite


@pytest.fixture
def gappy(workdir: Path) -> Path:
    """``tumours.csv`` with 28 of its 569 'mean texture' cells (4.9%) empty."""
    frame = pd.read_csv(workdir / "tumours.csv")
    frame.loc[np.random.default_rng(0).choice(len(frame), 28, replace=False), "mean texture"] = np.nan
    frame.to_csv(workdir / "gappy.csv", index=False)
    return workdir / "gappy.csv"


def test_init_prints_the_missing_values_and_how_the_detector_handles_them(gappy: Path) -> None:
    written = CliRunner().invoke(app, ["init", "gappy.csv", "--label", "diagnosis"])
    assert written.exit_code == 0, written.output
    said = written.output.splitlines()[0]
    assert said.endswith("[inferred]; missing: 28 cells in 'mean texture' (4.9% of rows), imputed with the "
                         "training mean plus a was-missing indicator column (tabular-lr)")
    assert f"# {said}\n" in (gappy.parent / "cascade.yaml").read_text()


@pytest.mark.parametrize("detector", ["tabular-lr", "tabular-hgb"])
def test_a_table_with_missing_values_runs_end_to_end(gappy: Path, detector: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init", "gappy.csv", "--label", "diagnosis"]).exit_code == 0
    raw = yaml.safe_load((gappy.parent / "cascade.yaml").read_text())
    raw["detector"]["kind"] = detector
    (gappy.parent / "cascade.yaml").write_text(yaml.safe_dump(raw))
    ran = runner.invoke(app, ["experiment", "run", "cascade.yaml"])
    assert ran.exit_code == 0, ran.output
    results = json.loads((gappy.parent / "results" / "gappy" / "results.json").read_text())
    assert results["config"]["detector"]["kind"] == detector and results["tiers"]["small"]["auroc"] > 0.95


def test_three_classes_run_end_to_end(workdir: Path) -> None:
    """Wine cultivars: detector, calibrator, policies, budget tuners and the harness on k = 3."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["cultivar"] = frame.pop("target").map({0: "barolo", 1: "grignolino", 2: "barbera"})
    frame.to_csv(workdir / "wine.csv", index=False)
    runner = CliRunner()
    assert runner.invoke(app, ["init", "wine.csv", "--label", "cultivar", "-o", "wine.yaml"]).exit_code == 0
    assert CascadeConfig.from_yaml(workdir / "wine.yaml").calibrator.kind == "temperature"
    ran = runner.invoke(app, ["experiment", "run", "wine.yaml"])
    assert ran.exit_code == 0, ran.output
    results = json.loads((workdir / "results" / "wine" / "results.json").read_text())
    assert results["config"]["expert"]["labels"] == ["barbera", "barolo", "grignolino"]
    assert results["tiers"]["small"]["accuracy"] > 0.85 and "auroc" not in results["tiers"]["small"]
    scalars = results["scalars"]["expert"]
    # a learned policy either runs or says why it could not learn on the small fit part
    assert set(scalars["policies"]) | set(scalars["skipped_policies"]) >= {"confidence", "margin", "entropy",
                                                                          "posthoc", "oracle"}
    assert {"confidence", "margin", "entropy", "oracle"} <= set(scalars["policies"])
    assert results["budget_adherence"]


def test_init_picks_text_detectors_for_a_text_file(workdir: Path) -> None:
    rows = [{"message": f"ticket {i}: " + ("please refund my order now" if i % 3 else "where is the meeting room"),
             "queue": "billing" if i % 3 else "facilities"} for i in range(60)]
    pd.DataFrame(rows).to_json(workdir / "tickets.jsonl", orient="records", lines=True)
    result = CliRunner().invoke(app, ["init", "tickets.jsonl", "--label", "queue", "-o", "tickets.yaml"])
    assert result.exit_code == 0, result.output
    raw = yaml.safe_load((workdir / "tickets.yaml").read_text())
    assert raw["dataset"] == {"name": "jsonl", "path": "tickets.jsonl", "label_column": "queue"}
    assert raw["detector"]["kind"] == "tfidf-lr" and raw["expert"]["labels"] == ["billing", "facilities"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cascade", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_errors_are_one_line_and_a_hint_unless_debug(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text("dataset: {name: csv, path: tumours.csv, label_column: diagnosis}\n"
                                      "detector: {kind: tfidf-lr}\nexpert: {kind: knn-vote, shots: 4}\n")
    plain = run_cli("experiment", "run", "bad.yaml", cwd=workdir)
    assert plain.returncode == 2
    lines = plain.stdout.strip().splitlines()
    assert lines == ["error: bad.yaml: invalid config",
                     "  detector.kind: 'tfidf-lr' takes text, but dataset 'tumours.csv' holds feature rows; for "
                     "feature rows use one of isolation-forest, pyod, tabular-hgb, tabular-lr",
                     lines[-1]]
    assert lines[-1].startswith("hint: change the fields named above") and "Traceback" not in plain.stderr
    debug = run_cli("--debug", "experiment", "run", "bad.yaml", cwd=workdir)
    assert debug.returncode != 0 and "Traceback" in debug.stderr + debug.stdout


def test_unexpected_errors_say_their_type_and_how_to_see_more() -> None:
    assert explain_error(KeyError("x")) == ("KeyError: 'x'", "run again with `cascade --debug ...` for the full traceback")
    message, hint = explain_error(ValueError("dataset.label_column: no column 'kind'\nmore"))
    assert message == "dataset.label_column: no column 'kind'\nmore" and "--label" in hint


@pytest.mark.integration
def test_the_initialised_config_serves_rows_over_http(workdir: Path) -> None:
    import httpx
    import ray
    from ray import serve

    from deployments.app import init_ray, run
    from policies.tune import tune
    from test_serve import free_port

    assert CliRunner().invoke(app, ["init", "tumours.csv", "--label", "diagnosis"]).exit_code == 0
    raw = yaml.safe_load((workdir / "cascade.yaml").read_text())
    raw["serve"] = {"port": free_port()}
    config = CascadeConfig.from_dict(raw)
    tune(config, progress=False)
    rows = pd.read_csv(workdir / "tumours.csv").drop(columns="diagnosis").to_numpy()[:20]
    init_ray(num_cpus=2)
    try:
        url = run(config)
        response = httpx.post(f"{url}/v1/detect", json={"samples": [{"features": r.tolist()} for r in rows]},
                              timeout=120.0)
        assert response.status_code == 200, response.text
        verdicts = response.json()["verdicts"]
        assert len(verdicts) == 20 and {v["label"] for v in verdicts} <= {"benign", "malignant"}
    finally:
        serve.shutdown()
        ray.shutdown()
