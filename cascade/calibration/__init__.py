"""Make the small tier's probabilities mean what they say, and measure how well they do.

>>> from cascade.calibration import make_calibrator, ece   # doctest: +SKIP
>>> calibrated = make_calibrator("platt").fit(raw_cal, y_cal).transform(raw_test)   # doctest: +SKIP
"""

from cascade.calibration.calibrators import (
    CALIBRATORS,
    CalibratorBase,
    IdentityCalibrator,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    load_calibrator,
    make_calibrator,
)
from cascade.calibration.metrics import Reliability, adaptive_ece, brier, calibration_summary, ece, nll, reliability
from cascade.calibration.plots import plot_reliability

__all__ = [
    "CALIBRATORS", "CalibratorBase", "IdentityCalibrator", "IsotonicCalibration", "PlattScaling", "Reliability",
    "TemperatureScaling", "adaptive_ece", "brier", "calibration_summary", "ece", "load_calibrator",
    "make_calibrator", "nll", "plot_reliability", "reliability",
]
