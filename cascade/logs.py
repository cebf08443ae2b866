"""Library output to a file, our own to the terminal.

vLLM, Ray and transformers log from this process and from the processes they spawn, all of which
write to the inherited file descriptors 1 and 2. :func:`library_output_to` points those at a log
file for the duration of a block and hands back a stream on the original terminal, for the
console that shows progress and results; :func:`library_logs` is that for a named run
(``$CASCADE_HOME/logs/NAME.log``), as the CLI and the benchmarks use it.

>>> with library_logs("demo") as terminal:   # doctest: +SKIP
...     Console(file=terminal).print("progress and results only")
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def library_output_to(path: str | Path) -> Iterator[TextIO]:
    """Send everything written to stdout / stderr (also by child processes) to ``path`` (appended);
    yield a text stream on the original stdout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            terminal.close()


@contextmanager
def library_logs(name: str) -> Iterator[TextIO]:
    """Say where the log goes, then send library output to ``$CASCADE_HOME/logs/NAME.log`` for the block
    (:func:`library_output_to`); yield a stream on the terminal. A running Ray is shut down inside the
    redirect, so the last lines its workers stream go to the log too."""
    from cascade.paths import home

    log = home() / "logs" / f"{name}.log"
    print(f"library logs (vLLM, Ray, transformers) go to {log}", flush=True)
    with library_output_to(log) as terminal:
        try:
            yield terminal
        finally:
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                ray.shutdown()
