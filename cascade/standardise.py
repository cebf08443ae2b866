"""Column z-scores of feature rows that tolerate missing values: NaN sits at the column's mean.

Moments are taken over each column's present values, and a missing value standardises to 0, so
distances and projections treat it as the most typical value of its column. On rows without NaN
the numbers are exactly ``rows.mean(axis=0)`` and ``rows.std(axis=0)``.

>>> import numpy as np
>>> rows = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 8.0]])
>>> mean, spread = column_moments(rows)
>>> mean.tolist(), spread.tolist()
([3.0, 6.0], [1.632993161855452, 2.0])
>>> standardised(rows, mean, spread)[0].round(3).tolist()
[-1.225, 0.0]
"""

from __future__ import annotations

import numpy as np


def column_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation over its present values (0 and 0 where none is)."""
    present = ~np.isnan(rows)
    count = np.maximum(present.sum(axis=0), 1)
    mean = np.where(present, rows, 0.0).sum(axis=0) / count
    deviation = np.where(present, rows - mean, 0.0)
    return mean, np.sqrt((deviation**2).sum(axis=0) / count)


def standardised(rows: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(rows - mean) / scale``, with 0 where a value is missing."""
    return np.nan_to_num((rows - mean) / scale, nan=0.0)
