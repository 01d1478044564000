"""Writing released images: PNG (2D), NIfTI (2D or 3D) or DICOM (through :mod:`monai_pso.data.dicom_writer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMATS = ("png", "nifti", "dicom")


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
            raise ValueError(f"PNG holds 2D images only, got {spatial_dims}D (use --format nifti)")
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
    raise ValueError(f"unknown image format {fmt!r}; choose from {', '.join(FORMATS)}")
