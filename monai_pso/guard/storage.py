"""The values an image file will hold: the gate checks those, so the certificate is about the released file.

PNG stores 8 bits (``round(255 v) / 255``), DICOM stores ``round(v * max_stored)`` of the modality's
profile (:mod:`monai_pso.data.dicom_iod`), NIfTI stores float32 exactly. Quantising first and checking the
quantised image means the distance written in the audit log is the distance of the file itself.

Examples
--------
>>> stored = as_stored(np.array([[[0.5, 0.1234]]], np.float32), "png")
>>> (stored * 255).round().tolist()
[[[128.0, 31.0]]]
>>> bool((as_stored(stored, "png") == stored).all())
True
"""

from __future__ import annotations

import numpy as np

from monai_pso.errors import MonaiPsoError

#: Release file formats.
FORMATS = ("png", "nifti", "dicom")


def as_stored(image: np.ndarray, fmt: str, modality: str = "other") -> np.ndarray:
    """``image`` (float, in ``[0, 1]``) as the float32 values a ``fmt`` file of it holds (scaled to ``[0, 1]``)."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if fmt == "png":
        return (np.rint(array * 255.0) / 255.0).astype(np.float32)
    if fmt == "nifti":
        return array
    if fmt == "dicom":
        from monai_pso.data.dicom_iod import modality_profile

        profile = modality_profile(modality)
        return (profile.to_stored(array).astype(np.float64) / profile.max_stored).astype(np.float32)
    raise MonaiPsoError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
