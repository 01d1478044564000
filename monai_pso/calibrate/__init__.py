"""Calibrating the privacy threshold tau from held-out and same-patient distances (see ``docs/guard.md``).

Examples
--------
>>> from monai_pso.calibrate import Threshold, calibrate_threshold
"""

from monai_pso.calibrate.calibration import calibrate_threshold
from monai_pso.calibrate.distances import PatientDistances, holdout_distances, same_patient_distances
from monai_pso.calibrate.measure import check_image_batch, nearest_training_items
from monai_pso.calibrate.provenance import resolve_embedder
from monai_pso.calibrate.threshold import RULES, Threshold, ThresholdPart

__all__ = [
    "PatientDistances",
    "RULES",
    "Threshold",
    "ThresholdPart",
    "calibrate_threshold",
    "check_image_batch",
    "holdout_distances",
    "nearest_training_items",
    "resolve_embedder",
    "same_patient_distances",
]
