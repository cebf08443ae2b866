"""Products of a few query rows with a reference matrix, kept off the BLAS thread pool.

OpenBLAS threads spin-wait for a while after each call, and on a small machine that takes the cores
from the next torch forward pass: a MiniLM embedding of one unseen mail took 96 ms right after a
multi-threaded ``(1, 384) @ (384, 2490)`` product and 50 ms after a single-threaded one (2 cores).
A product of a few rows gains nothing from threads, so it runs on one; large batches keep them.

>>> import numpy as np
>>> cross(np.ones((1, 3)), np.eye(3)).tolist()
[[1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

SINGLE_THREAD_ROWS = 64
"""At most this many query rows: one BLAS thread."""


@functools.cache
def _blas() -> "ThreadpoolController":
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def limited_threads(limit: int, user_api: str) -> Any:
    """A context capping ``user_api`` ("blas" or "openmp") threads at ``limit``; the controller,
    slow to build (it scans the loaded libraries), is built once per process."""
    return _blas().limit(limits=limit, user_api=user_api)


def cross(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``queries @ reference.T``, single-threaded for at most ``SINGLE_THREAD_ROWS`` queries."""
    if len(queries) > SINGLE_THREAD_ROWS:
        return queries @ reference.T
    with _blas().limit(limits=1, user_api="blas"):
        return queries @ reference.T
