"""Calibrating the privacy threshold tau from held-out and same-patient distances, and the plausibility radius (see ``docs/guard.md``).

Examples
--------
>>> from monai_pso.calibrate import Threshold, calibrate_threshold
"""

from monai_pso.calibrate.calibration import calibrate_threshold
from monai_pso.calibrate.distances import PatientDistances, holdout_distances, same_patient_distances
from monai_pso.calibrate.plausibility import calibrate_plausibility, kth_nearest_distances
from monai_pso.calibrate.radius import PlausibilityRadius
from monai_pso.calibrate.threshold import RULES, Threshold, ThresholdPart

__all__ = [
    "PatientDistances",
    "PlausibilityRadius",
    "RULES",
    "Threshold",
    "ThresholdPart",
    "calibrate_plausibility",
    "calibrate_threshold",
    "holdout_distances",
    "kth_nearest_distances",
    "same_patient_distances",
]
