"""Release image files: the formats, the values a file of each holds, and the writer.

PNG stores 8 bits (``round(255 v) / 255``), DICOM stores ``round(v * max_stored)`` of the modality's
profile (:mod:`monai_pso.data.dicom_iod`), NIfTI stores float32 exactly. The guard checks
:func:`as_stored` of an image, so the distance written in the audit log is the distance of the file itself.

Examples
--------
>>> stored = as_stored(np.array([[[0.5, 0.1234]]], np.float32), "png")
>>> (stored * 255).round().tolist()
[[[128.0, 31.0]]]
>>> bool((as_stored(stored, "png") == stored).all())
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_pso.errors import ImageValueError, MonaiPsoError

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

def write_image(
    image: torch.Tensor | np.ndarray,
    stem: str | Path,
    fmt: str,
    spacing: tuple[float, ...] | None = None,
    modality: str = "other",
    certificate: dict[str, Any] | None = None,
) -> list[Path]:
    """Write one image ``(1, *spatial)`` in ``[0, 1]`` as ``stem`` + the format's suffix; returns the files.

    Examples
    --------
    >>> import tempfile
    >>> [p.suffix for p in write_image(np.zeros((1, 4, 4), np.float32), Path(tempfile.mkdtemp()) / "a", "png")]
    ['.png']
    """
    array = np.clip(np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float32), 0.0, 1.0)
    stem = Path(stem)
    spatial_dims = array.ndim - 1
    if fmt == "png":
        if spatial_dims != 2:
            raise ImageValueError(f"PNG holds 2D images only, got {spatial_dims}D (use --format nifti)")
        from PIL import Image

        path = stem.with_suffix(".png")
        Image.fromarray(np.round(array[0] * 255.0).astype(np.uint8)).save(path)
        return [path]
    if fmt == "nifti":
        import nibabel as nib

        affine = np.diag(list(spacing or (1.0,) * spatial_dims) + [1.0] * (4 - spatial_dims))
        path = stem.parent / f"{stem.name}.nii.gz"
        nib.save(nib.Nifti1Image(array[0], affine), str(path))
        return [path]
    if fmt == "dicom":
        from monai_pso.data.dicom_writer import write_dicom

        return list(write_dicom(array, stem, modality=modality, spacing=spacing, certificate=certificate or {}))
    raise MonaiPsoError(f"unknown image format {fmt!r}; choose from {', '.join(FORMATS)}")
