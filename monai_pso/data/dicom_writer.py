"""Write a synthetic image as DICOM: a 2D image as one file, a 3D volume as a series of slices.

Everything in the header is made here: new UIDs (:func:`pydicom.uid.generate_uid`), a synthetic patient,
today's date; no attribute is copied from any training patient. Each file is marked synthetic four ways:

- *Image Type* ``DERIVED\\SECONDARY``, *Series Description* ``SYNTHETIC - monai-pso`` (or the caller's
  description, always prefixed ``SYNTHETIC``), *Burned In Annotation* ``NO``;
- *Patient Identity Removed* ``YES`` with *De-identification Method* naming monai-pso and its version;
- *Patient Name* ``SYNTHETIC^<id>`` and *Patient ID* ``SYNTHETIC-<id>``, one per written image or series;
- the privacy certificate in *Image Comments* and the ``MONAI-PSO`` private block
  (:mod:`monai_pso.data.dicom_certificate`).

Array layout: a 2D image is ``(1, rows, columns)``, a volume ``(1, slices, rows, columns)``; ``spacing`` is
given in the same (array) order, in mm. Slice ``k`` of a volume sits at *Image Position (Patient)*
``(0, 0, k * slice_spacing)`` with *Image Orientation (Patient)* ``1\\0\\0\\0\\1\\0`` (axial).
Pixel values and SOP classes per modality are listed in :mod:`monai_pso.data.dicom_iod`.

Examples
--------
>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "synthetic-0001"
>>> cert = {"tau": 0.3, "nn_distance": 0.42, "release_id": "r1"}
>>> paths = write_dicom(np.full((1, 4, 8, 8), 0.5, np.float32), out, modality="ct", spacing=(2.0, 1.0, 1.0), certificate=cert)
>>> len(paths), paths[0].parent.name
(4, 'synthetic-0001')
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from monai_pso import __version__
from monai_pso.data.dicom_certificate import SOFTWARE, PrivacyCertificate
from monai_pso.data.dicom_iod import ModalityProfile, SliceGeometry, modality_profile
from monai_pso.errors import DicomWriteError, ImageValueError
from monai_pso.io import staged_folder, write_atomically

#: Series Description when the caller gives none; a caller's description is prefixed with ``SYNTHETIC - ``.
DEFAULT_SERIES_DESCRIPTION = "SYNTHETIC - monai-pso"
#: Axial orientation: rows run along patient x, columns along patient y.
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class _SeriesContext:
    """What every file of one written image or series shares."""

    profile: ModalityProfile
    certificate: PrivacyCertificate
    series_description: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    synthetic_id: str
    date: str
    time: str


def write_dicom(
    image: np.ndarray,
    out_stem: str | os.PathLike,
    *,
    modality: str,
    spacing: Sequence[float] | None,
    certificate: Mapping[str, object],
    series_description: str | None = None,
    preset: str = "ct",
) -> list[Path]:
    """Write a synthetic image as DICOM, marked synthetic and carrying its privacy certificate.

    Parameters
    ----------
    image
        float ``(1, rows, columns)`` or ``(1, slices, rows, columns)`` in ``[0, 1]`` (values outside are
        clipped; NaN or Inf is refused).
    out_stem
        Output name without suffix: a 2D image is written to ``<out_stem>.dcm``, a volume to
        ``<out_stem>/<slice number, 4 digits>.dcm``. Whatever was there is replaced.
    modality
        ``ct``, ``mri``, ``pet``, ``xray``, ``us`` or ``other`` (written as CT, MR, PT, DX, and Secondary
        Capture for the last two; xray is 2D only).
    spacing
        Pixel spacing in mm in array order (``(row, column)`` or ``(slice, row, column)``); ``None`` for 1 mm.
    certificate
        The privacy certificate: ``tau`` (or ``threshold``), ``nn_distance``, and optionally
        ``index_fingerprint``, ``embedder_fingerprint``, ``release_id`` (see
        :class:`~monai_pso.data.dicom_certificate.PrivacyCertificate`).
    series_description
        Text after ``SYNTHETIC - `` in *Series Description*; default ``monai-pso``.
    preset
        CT only: the intensity preset that mapped HU to ``[0, 1]`` (``ct``, ``ct_lung``, ``ct_soft``).

    Returns
    -------
    list of Path
        The written files, in slice order.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "xr"
    >>> write_dicom(np.zeros((1, 8, 8), np.float32), out, modality="xray", spacing=None,
    ...             certificate={"tau": 0.3, "nn_distance": 0.5})[0].name
    'xr.dcm'
    """
    stack, is_volume = _check_image(image)
    pixel_spacing, slice_spacing = _check_spacing(spacing, 3 if is_volume else 2)
    context = _new_series(modality, preset, certificate, series_description)
    slices = [
        _slice_dataset(context, pixels, SliceGeometry(k, len(stack), pixel_spacing, slice_spacing))
        for k, pixels in enumerate(stack)
    ]
    out_stem = Path(out_stem)
    if not is_volume:
        target = out_stem.with_name(out_stem.name + ".dcm")
        write_atomically(target, lambda stream: slices[0].save_as(stream, enforce_file_format=True))
        return [target]
    with staged_folder(out_stem) as staged:  # the series replaces a previous one at once
        for ds in slices:
            ds.save_as(staged / f"{ds.InstanceNumber:04d}.dcm", enforce_file_format=True)
    return [out_stem / f"{ds.InstanceNumber:04d}.dcm" for ds in slices]


def _check_image(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The image as a stack of slices ``(slices, rows, columns)``, and whether it is a volume."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim not in (3, 4) or array.shape[0] != 1 or min(array.shape) < 1:
        raise ImageValueError(f"write_dicom needs an image shaped (1, rows, columns) or (1, slices, rows, columns), got {array.shape}")
    if not np.isfinite(array).all():
        raise ImageValueError("write_dicom: image holds NaN or Inf values")
    return (array[0] if array.ndim == 4 else array), array.ndim == 4


def _check_spacing(spacing: Sequence[float] | None, dims: int) -> tuple[tuple[float, float], float | None]:
    """(pixel spacing (row, column), slice spacing or None) from array-order spacing."""
    values = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * dims
    if len(values) != dims or not all(np.isfinite(values)) or min(values) <= 0:
        raise DicomWriteError(f"spacing: must be {dims} positive numbers (mm, array order), got {spacing!r}")
    return (values[-2], values[-1]), (values[0] if dims == 3 else None)


def _new_series(modality: str, preset: str, certificate: Mapping[str, object], description: str | None) -> _SeriesContext:
    now = dt.datetime.now()
    series_uid = generate_uid()
    return _SeriesContext(
        profile=modality_profile(modality, preset),
        certificate=PrivacyCertificate.from_mapping(certificate),
        series_description=f"SYNTHETIC - {description}"[:64] if description else DEFAULT_SERIES_DESCRIPTION,
        study_uid=generate_uid(),
        series_uid=series_uid,
        frame_of_reference_uid=generate_uid(),
        synthetic_id=series_uid.rsplit(".", 1)[-1][-12:],
        date=now.strftime("%Y%m%d"),
        time=now.strftime("%H%M%S"),
    )


def _slice_dataset(context: _SeriesContext, pixels: np.ndarray, geometry: SliceGeometry) -> Dataset:
    """One complete DICOM dataset (with file meta) for one 2D image or slice."""
    profile = context.profile
    ds = Dataset()
    _write_patient_and_study(ds, context)
    _write_series_and_equipment(ds, context)
    _write_image(ds, context, geometry)
    stored = profile.to_stored(pixels)
    ds.set_pixel_data(stored, "MONOCHROME2", profile.bits_stored, generate_instance_uid=False)
    if profile.image_plane:
        _write_image_plane(ds, geometry)
    if profile.rescale:
        ds.RescaleSlope, ds.RescaleIntercept, rescale_type = profile.rescale
        if rescale_type:
            ds.RescaleType = rescale_type
    ds.WindowCenter, ds.WindowWidth = profile.window
    profile.write_modules(ds, geometry)
    context.certificate.write_to(ds)
    ds.SOPClassUID = profile.sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = context.date, context.time
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.file_meta = _file_meta(ds)
    return ds


def _write_patient_and_study(ds: Dataset, context: _SeriesContext) -> None:
    # Patient: a synthetic identity; birth date and sex unknown (Type 2, empty)
    ds.PatientName = f"SYNTHETIC^{context.synthetic_id}"
    ds.PatientID = f"SYNTHETIC-{context.synthetic_id}"
    ds.PatientBirthDate = None
    ds.PatientSex = None
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"synthetic image generated by {SOFTWARE}; no patient data"
    # General Study
    ds.StudyInstanceUID = context.study_uid
    ds.StudyDate, ds.StudyTime = context.date, context.time
    ds.ReferringPhysicianName = None
    ds.StudyID = context.synthetic_id
    ds.AccessionNumber = None
    ds.StudyDescription = context.series_description


def _write_series_and_equipment(ds: Dataset, context: _SeriesContext) -> None:
    # General Series, Frame of Reference, General Equipment
    ds.Modality = context.profile.dicom_modality
    ds.SeriesInstanceUID = context.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = context.series_description
    if context.profile.image_plane:
        ds.FrameOfReferenceUID = context.frame_of_reference_uid
        ds.PositionReferenceIndicator = None
    ds.Manufacturer = "monai-pso"
    ds.ManufacturerModelName = "monai-pso synthetic image generator"
    ds.SoftwareVersions = __version__


def _write_image(ds: Dataset, context: _SeriesContext, geometry: SliceGeometry) -> None:
    # General Image
    ds.InstanceNumber = geometry.index + 1
    ds.ContentDate, ds.ContentTime = context.date, context.time
    ds.ImageType = list(context.profile.image_type)
    ds.DerivationDescription = f"Synthetic image generated by {SOFTWARE}; privacy-gated"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"


def _write_image_plane(ds: Dataset, geometry: SliceGeometry) -> None:
    position = geometry.index * (geometry.slice_spacing or 0.0)
    ds.PixelSpacing = list(geometry.pixel_spacing)
    ds.ImageOrientationPatient = list(AXIAL_ORIENTATION)
    ds.ImagePositionPatient = [0.0, 0.0, position]
    ds.SliceThickness = geometry.slice_spacing
    if geometry.is_volume:
        ds.SpacingBetweenSlices = geometry.slice_spacing
        ds.SliceLocation = position


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta
