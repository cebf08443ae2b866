"""Writes a benchmark's numbers as ``NAME.json`` and its report as ``NAME.md`` under one folder."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


def write_results(out: Path, name: str, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                  indent: int = 2) -> None:
    """Save ``report`` to ``out/NAME.json`` and ``markdown(report)`` to ``out/NAME.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=indent))
    (out / f"{name}.md").write_text(markdown(report))


@contextmanager
def library_logs(name: str) -> Iterator[TextIO]:
    """Ray's, vLLM's and transformers' output (also from their processes) goes to
    ``$CASCADE_HOME/logs/NAME.log`` for the block; yields a stream on the terminal for results."""
    from cascade.logs import library_output_to
    from cascade.paths import home

    log = home() / "logs" / f"{name}.log"
    print(f"library logs (Ray, vLLM, transformers) go to {log}", flush=True)
    with library_output_to(log) as terminal:
        yield terminal
