"""Few-row products run on one BLAS thread and give the same numbers as numpy's."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from cascade.linalg import SINGLE_THREAD_ROWS, cross


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.mark.parametrize("rows", [1, SINGLE_THREAD_ROWS, SINGLE_THREAD_ROWS + 1, 500])
def test_cross_equals_the_matrix_product(rows: int) -> None:
    rng = np.random.default_rng(rows)
    queries, reference = rng.standard_normal((rows, 32)), rng.standard_normal((300, 32))
    np.testing.assert_allclose(cross(queries, reference), queries @ reference.T, rtol=1e-12)


def test_cross_restores_the_blas_thread_count() -> None:
    before = blas_threads()
    cross(np.ones((2, 8)), np.ones((5, 8)))
    assert blas_threads() == before
