"""Library output (this process and its children) goes to the log file; the console stays clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.logs import library_logs, library_output_to


def test_library_and_child_output_go_to_the_file_and_the_terminal_stream_to_stdout(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "logs" / "demo.log"
    with library_output_to(log) as terminal:
        os.write(1, b"INFO engine line\n")
        os.write(2, b"WARNING ray line\n")
        subprocess.run([sys.executable, "-c", "print('child process line')"], check=True)
        terminal.write("progress 1/5\n")
    shown = capfd.readouterr()
    assert shown.out == "progress 1/5\n" and shown.err == ""
    assert log.read_text().splitlines() == ["INFO engine line", "WARNING ray line", "child process line"]
    os.write(1, b"after\n")
    assert capfd.readouterr().out == "after\n"  # the descriptors are restored


def test_a_named_run_says_where_its_log_goes_and_writes_it_under_the_cascade_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    with library_logs("bench") as terminal:
        os.write(2, b"WARNING ray line\n")
        terminal.write("result\n")
    log = tmp_path / "logs" / "bench.log"
    assert capfd.readouterr().out == f"library logs (vLLM, Ray, transformers) go to {log}\nresult\n"
    assert log.read_text() == "WARNING ray line\n"
