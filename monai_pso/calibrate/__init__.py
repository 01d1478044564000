"""Calibrating the privacy threshold tau from held-out and same-patient distances (see ``docs/guard.md``).

Examples
--------
>>> from monai_pso.calibrate import Threshold, calibrate_threshold
"""

from monai_pso.calibrate.calibration import calibrate_threshold
from monai_pso.calibrate.distances import PatientDistances, holdout_distances, same_patient_distances
from monai_pso.calibrate.threshold import RULES, Threshold, ThresholdPart

__all__ = [
    "PatientDistances",
    "RULES",
    "Threshold",
    "ThresholdPart",
    "calibrate_threshold",
    "holdout_distances",
    "same_patient_distances",
]
