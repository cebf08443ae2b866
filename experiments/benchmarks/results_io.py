"""Writes a benchmark's numbers as ``NAME.json`` and its report as ``NAME.md`` under one folder."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_results(out: Path, name: str, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                  indent: int = 2) -> None:
    """Save ``report`` to ``out/NAME.json`` and ``markdown(report)`` to ``out/NAME.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=indent))
    (out / f"{name}.md").write_text(markdown(report))
