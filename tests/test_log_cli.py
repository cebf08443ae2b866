"""`cascade log export CONFIG --out FILE`: the config's decision log, with its late labels, as CSV or Parquet."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner, Result

from cascade.cli import app
from cascade.config import CascadeConfig, ConfigError
from cascade.decision_log import Decision
from cascade.decision_setup import open_decision_log
from test_decision_log import LABELS, decision

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, **decision_log: object) -> Path:
    """A config whose decision log is an SQLite file in ``folder``."""
    path = folder / "cascade.yaml"
    settings = {"url": f"sqlite:///{folder / 'logs' / 'decisions.sqlite'}", **decision_log}
    path.write_text(yaml.safe_dump({"name": "log-export", "dataset": {"name": "spamassassin"},
                                    "serve": {"decision_log": settings}}))  # fmt: skip
    return path


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    return write_config(tmp_path)


@pytest.fixture
def served(config: Path) -> list[Decision]:
    """Three decisions the app logged under ``config``, the first two labelled afterwards."""
    now = time.time()
    made = [decision(at=now - 2), decision(at=now - 1, tier="expert", label="ham", deferred=True, tenant=None),
            decision(at=now, probabilities=(0.4, 0.6), tie_key=None)]  # fmt: skip
    with open_decision_log(CascadeConfig.from_yaml(config)) as log:
        log.record(made)
        statuses = log.attach_feedback([(made[0].id, "spam"), (made[1].id, "ham")], LABELS)
    assert [s.status for s in statuses] == ["ok", "ok"]
    return made


def export(*args: str) -> Result:
    return CliRunner().invoke(app, ["log", "export", *args])


def said(result: Result) -> str:
    """The command's output as one line of words (the usage-error box and its wrapping removed)."""
    return " ".join(result.output.translate(str.maketrans("│╭╮╰╯─", "      ")).split())


def test_csv_export_holds_every_decision_with_its_label(config: Path, served: list[Decision], tmp_path: Path) -> None:
    out = tmp_path / "exports" / "decisions.csv"
    result = export(str(config), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"exported 3 decisions to {out}"]
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["tier"], r["label"], r["true_label"], r["tenant"]) for r in rows] == [
        (served[0].id, "small", "spam", "spam", "acme"), (served[1].id, "expert", "ham", "ham", ""),
        (served[2].id, "small", "spam", "", "acme"),
    ]  # fmt: skip
    assert [json.loads(r["probabilities"]) for r in rows] == [[0.8, 0.2], [0.8, 0.2], [0.4, 0.6]]
    assert [float(r["time"]) for r in rows] == [d.time for d in served]
    assert [r["deferred"] for r in rows] == ["False", "True", "False"]


def test_parquet_export_holds_every_decision_with_its_label(config: Path, served: list[Decision],
                                                            tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "decisions.parquet"
    result = export(str(config), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"exported 3 decisions to {out}"]
    rows = pq.read_table(out).to_pylist()
    assert [(r["id"], r["true_label"], r["probabilities"], r["tie_key"]) for r in rows] == [
        (served[0].id, "spam", [0.8, 0.2], 0.25), (served[1].id, "ham", [0.8, 0.2], 0.25),
        (served[2].id, None, [0.4, 0.6], None),
    ]  # fmt: skip
    assert [r["time"] for r in rows] == [d.time for d in served] and rows[1]["deferred"] is True


def test_format_option_wins_over_the_suffix(config: Path, served: list[Decision], tmp_path: Path) -> None:
    out = tmp_path / "decisions.export"
    result = export(str(config), "--out", str(out), "--format", "parquet")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in pq.read_table(out).to_pylist()] == [d.id for d in served]


def test_an_unknown_suffix_without_format_is_refused(config: Path, served: list[Decision], tmp_path: Path) -> None:
    out = tmp_path / "decisions.xlsx"
    result = export(str(config), "--out", str(out))
    assert result.exit_code == 2
    assert "no export format for the suffix '.xlsx'; end the file name in .csv or .parquet" in said(result)
    assert not out.exists()


def test_an_unknown_format_is_refused(config: Path, served: list[Decision], tmp_path: Path) -> None:
    out = tmp_path / "decisions.csv"
    result = export(str(config), "--out", str(out), "--format", "xlsx")
    assert result.exit_code == 2
    assert "'xlsx' is not one of csv, parquet" in said(result)
    assert not out.exists()


def test_a_disabled_decision_log_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    config = write_config(tmp_path, enabled=False)
    result = export(str(config), "--out", str(tmp_path / "decisions.csv"))
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert str(result.exception) == f"{config}: serve.decision_log.enabled is false, so the app logs no decisions " \
                                    "to export"
    assert not (tmp_path / "decisions.csv").exists() and not (tmp_path / "logs").exists()


def test_a_log_not_yet_written_is_refused_without_creating_it(config: Path, tmp_path: Path) -> None:
    result = export(str(config), "--out", str(tmp_path / "decisions.csv"))
    assert isinstance(result.exception, FileNotFoundError)
    assert str(tmp_path / "logs" / "decisions.sqlite") in str(result.exception)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "decisions.csv").exists()


def test_the_command_line_error_is_one_line_and_a_hint(tmp_path: Path) -> None:
    config = write_config(tmp_path, enabled=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300", "CASCADE_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "cascade", "log", "export", str(config), "--out", "out.csv"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"error: {config}: serve.decision_log.enabled is false, so the app logs no decisions to export"
    assert len(lines) == 2 and lines[1].startswith("hint: ") and "Traceback" not in done.stderr
