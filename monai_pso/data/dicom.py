"""DICOM with pydicom: raw values in physical units, slices grouped into series and stacked into volumes.

Values
    The modality LUT (rescale slope and intercept, also from enhanced multi-frame functional groups)
    is applied, so CT comes in Hounsfield units and PET in its stored units (e.g. Bq/ml).
    ``MONOCHROME1`` images (bright = low value, common for radiographs) are inverted within their
    stored bit range so that bright always means a high value. Colour images (RGB, YBR, palette
    colour) are converted to grey with ITU-R 601 luma weights.
Shapes
    A single-frame file is 2D ``(rows, columns)``; a multi-frame file, or a series of single-frame
    slices, is 3D ``(slices, rows, columns)`` with slices sorted along the slice normal
    (``ImageOrientationPatient`` x ``ImagePositionPatient``; ``InstanceNumber`` when positions are
    absent). Spacing follows the same axes: slice distance from the positions (else
    ``SpacingBetweenSlices`` or ``SliceThickness``), then ``PixelSpacing``.
Transfer syntaxes
    Whatever the installed pydicom plugins decode (native little and big endian, RLE, JPEG baseline
    and JPEG 2000 through Pillow, more with pylibjpeg or gdcm); others raise
    :class:`~monai_pso.errors.DataSourceError` naming the file, the transfer syntax and what to install.

Examples
--------
>>> from pydicom.dataset import Dataset
>>> ds = Dataset()
>>> ds.Rows, ds.Columns, ds.NumberOfFrames, ds.Modality, ds.PatientID = 64, 64, 10, "MR", "P7"
>>> header = header_from_dataset(ds, "emri_small.dcm")
>>> header.shape, header.modality, header.patient_id
((10, 64, 64), 'mri', 'P7')
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_pso.data.files import ImageHeader, as_source_error, native, rgb_to_grey
from monai_pso.errors import DataSourceError

logger = logging.getLogger(__name__)

#: DICOM ``Modality`` tag -> monai-pso modality (anything else is ``"other"``).
MODALITY_FROM_TAG = {"CT": "ct", "MR": "mri", "PT": "pet", "CR": "xray", "DX": "xray", "DR": "xray", "MG": "xray", "US": "us"}

#: Where enhanced multi-frame files keep attributes that classic files hold at the top level.
_FUNCTIONAL_GROUP = {
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "SpacingBetweenSlices": "PixelMeasuresSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "ImagePositionPatient": "PlanePositionSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
}


@dataclass(frozen=True)
class DicomHeader:
    """The attributes of one DICOM file that reading, grouping and record-keeping need."""

    path: str
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    modality_tag: str | None
    rows: int
    columns: int
    frames: int
    orientation: tuple[float, ...] | None
    positions: tuple[tuple[float, ...], ...]  # one per frame when known, else empty
    instance_number: int | None
    pixel_spacing: tuple[float, float] | None
    slice_gap: float | None  # SpacingBetweenSlices, else SliceThickness
    stack_key: tuple  # echo and temporal position: slices of one volume share it
    study_date: str | None
    series_description: str | None

    @property
    def modality(self) -> str:
        """The monai-pso modality (``ct``, ``mri``, ``pet``, ``xray``, ``us`` or ``other``)."""
        return MODALITY_FROM_TAG.get((self.modality_tag or "").upper(), "other")

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of this file alone."""
        return (self.frames, self.rows, self.columns) if self.frames > 1 else (self.rows, self.columns)

    def extra(self) -> dict[str, str]:
        """Study and series identifiers and descriptions, for a record's ``extra``."""
        values = {"study_uid": self.study_uid, "series_uid": self.series_uid, "study_date": self.study_date, "series_description": self.series_description}
        return {key: value for key, value in values.items() if value}


def _dataset(path: str | Path, pixels: bool, require_image: bool = True):
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not Path(path).is_file():
        raise DataSourceError(path, "no such file")
    with as_source_error(path, "cannot read as DICOM"):
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
        if "TransferSyntaxUID" not in ds.file_meta:  # no file meta header: take the encoding read
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if require_image and ("Rows" not in ds or "Columns" not in ds):
        raise DataSourceError(path, "not a DICOM image (no Rows/Columns: corrupt, truncated, or an object without pixels)")
    return ds


def _functional(ds, keyword: str, frame: int = 0):
    """``keyword`` at the top level, else from frame ``frame``'s or the shared functional group."""
    value = ds.get(keyword)
    if value not in (None, ""):
        return value
    sequence = _FUNCTIONAL_GROUP.get(keyword)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    groups = ([per_frame[frame]] if frame < len(per_frame) else []) + list(ds.get("SharedFunctionalGroupsSequence") or [])
    for group in groups:
        items = group.get(sequence) or []
        if items and items[0].get(keyword) not in (None, ""):
            return items[0].get(keyword)
    return None


def _floats(value) -> tuple[float, ...] | None:
    if value in (None, ""):
        return None
    try:
        return tuple(float(v) for v in (value if isinstance(value, Iterable) and not isinstance(value, str) else [value]))
    except (TypeError, ValueError):
        return None


def _text(ds, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    return str(value).strip() or None


def header_from_dataset(ds, path: str | Path) -> DicomHeader:
    """The :class:`DicomHeader` of a dataset read by pydicom."""
    with as_source_error(path, "malformed DICOM header"):
        frames = int(ds.get("NumberOfFrames") or 1)
        positions = tuple(p for p in (_floats(_functional(ds, "ImagePositionPatient", f)) for f in range(frames)) if p and len(p) == 3)
        spacing = _floats(_functional(ds, "PixelSpacing"))
        gap = _floats(_functional(ds, "SpacingBetweenSlices")) or _floats(_functional(ds, "SliceThickness"))
        instance = ds.get("InstanceNumber")
        return DicomHeader(
            path=str(path),
            patient_id=_text(ds, "PatientID"),
            study_uid=_text(ds, "StudyInstanceUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            sop_uid=_text(ds, "SOPInstanceUID"),
            modality_tag=_text(ds, "Modality"),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            frames=frames,
            orientation=_floats(_functional(ds, "ImageOrientationPatient")),
            positions=positions if len(positions) == frames else (),
            instance_number=int(instance) if instance not in (None, "") else None,
            pixel_spacing=spacing[:2] if spacing and len(spacing) >= 2 and min(spacing[:2]) > 0 else None,
            slice_gap=gap[0] if gap and gap[0] > 0 else None,
            stack_key=(_text(ds, "EchoNumbers"), _text(ds, "TemporalPositionIdentifier")),
            study_date=_text(ds, "StudyDate"),
            series_description=_text(ds, "SeriesDescription"),
        )


def read_dicom_header(path: str | Path) -> DicomHeader:
    """Header attributes of one DICOM file, without decoding its pixels.

    Raises
    ------
    DataSourceError
        When the file is absent, not DICOM, or holds no image.
    """
    return header_from_dataset(_dataset(path, pixels=False), path)


def _photometric(ds) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()


def _decoded_pixels(ds, path: str | Path) -> np.ndarray:
    """Stored values as pydicom decodes them (YBR converted to RGB), palette colour looked up."""
    from pydicom.pixels import apply_color_lut, get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DataSourceError(path, f"transfer syntax {syntax.name} ({syntax}) holds no decodable pixel data") from None
    if not decoder.is_available:
        options = "; ".join(decoder.missing_dependencies) or "a pydicom pixel data plugin"
        raise DataSourceError(path, f"cannot decode transfer syntax {syntax.name} ({syntax}): install one of: {options}")
    with as_source_error(path, f"cannot decode the pixel data ({syntax.name})"):
        values = ds.pixel_array
        return apply_color_lut(values, ds) if _photometric(ds) == "PALETTE COLOR" else values


def pixels_from_dataset(ds, path: str | Path) -> np.ndarray:
    """Raw values of a dataset, without the channel axis: grey, in physical units, native byte order."""
    values = _decoded_pixels(ds, path)
    with as_source_error(path, "cannot interpret the pixel data"):
        if values.shape[-1:] == (3,) and (int(ds.get("SamplesPerPixel") or 1) == 3 or _photometric(ds) == "PALETTE COLOR"):
            values = rgb_to_grey(values)
        elif int(ds.get("SamplesPerPixel") or 1) != 1:
            raise DataSourceError(path, f"DICOM with {ds.SamplesPerPixel} samples per pixel is neither grey nor colour")
        if _photometric(ds) == "MONOCHROME1":
            bits = int(ds.get("BitsStored") or ds.BitsAllocated)
            low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.get("PixelRepresentation") == 1 else (0, 2**bits - 1)
            values = (low + high) - values
        return native(_rescaled(ds, values))


def _rescaled(ds, values: np.ndarray) -> np.ndarray:
    """Apply the modality LUT: a LUT sequence, or slope/intercept (per frame for enhanced files)."""
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(values, ds)
    frames = values.shape[0] if int(ds.get("NumberOfFrames") or 1) > 1 else 1
    slopes = np.array([float(_functional(ds, "RescaleSlope", f) or 1.0) for f in range(frames)], dtype=np.float32)
    intercepts = np.array([float(_functional(ds, "RescaleIntercept", f) or 0.0) for f in range(frames)], dtype=np.float32)
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return values
    broadcast = (-1,) + (1,) * (values.ndim - 1) if frames > 1 else ()
    return values.astype(np.float32) * slopes.reshape(broadcast) + intercepts.reshape(broadcast)


def read_dicom_file(path: str | Path) -> np.ndarray:
    """Raw values ``(1, rows, columns)`` or, multi-frame, ``(1, frames, rows, columns)``.

    Raises
    ------
    DataSourceError
        When the file is absent, corrupt, holds no image, or its transfer syntax cannot be decoded.
    """
    ds = _dataset(path, pixels=True)
    return pixels_from_dataset(ds, path)[None]


def read_dicom_series(paths: Sequence[str | Path]) -> np.ndarray:
    """One volume ``(1, slices, rows, columns)`` from single-frame slice files, sorted along the normal.

    Examples
    --------
    >>> read_dicom_series(("ct/IM1.dcm", "ct/IM2.dcm")).shape  # doctest: +SKIP
    (1, 2, 512, 512)
    """
    if len(paths) == 1:
        return read_dicom_file(paths[0])
    if not paths:
        raise DataSourceError("<DICOM series>", "no files")
    datasets = [(path, _dataset(path, pixels=True)) for path in paths]
    headers = sort_slices([header_from_dataset(ds, path) for path, ds in datasets])
    _check_stackable(headers)
    by_path = dict(datasets)
    volume = np.stack([pixels_from_dataset(by_path[h.path], h.path) for h in headers])
    return volume[None]


def _check_stackable(headers: Sequence[DicomHeader]) -> None:
    first = headers[0]
    for header in headers[1:]:
        if header.frames > 1 or (header.rows, header.columns) != (first.rows, first.columns):
            raise DataSourceError(header.path, f"cannot stack with {first.path} into one volume: shapes {header.shape} and {first.shape}")


def _normal(orientation: tuple[float, ...] | None) -> np.ndarray | None:
    if orientation is None or len(orientation) != 6:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return normal if np.linalg.norm(normal) > 0 else None


def sort_slices(headers: Sequence[DicomHeader]) -> list[DicomHeader]:
    """Slices ordered along the slice normal; by ``InstanceNumber`` (then path) when positions are absent."""
    normal = _normal(headers[0].orientation)
    if normal is not None and all(h.positions for h in headers):
        return sorted(headers, key=lambda h: (float(np.dot(h.positions[0], normal)), h.path))
    return sorted(headers, key=lambda h: (h.instance_number if h.instance_number is not None else 0, h.path))


def _slice_distances(positions: Sequence[tuple[float, ...]], orientation: tuple[float, ...] | None) -> np.ndarray | None:
    normal = _normal(orientation)
    if normal is None or len(positions) < 2:
        return None
    return np.diff(np.sort(np.asarray(positions) @ normal))


def series_header(headers: Sequence[DicomHeader]) -> ImageHeader:
    """Shape and spacing of one file (``len(headers) == 1``) or of a sorted series of slices."""
    first = headers[0]
    if len(headers) == 1 and first.frames == 1:
        return ImageHeader(first.shape, first.pixel_spacing)
    positions = [h.positions[0] for h in headers if h.positions] if len(headers) > 1 else list(first.positions)
    distances = _slice_distances(positions, first.orientation)
    gap = float(np.median(np.abs(distances))) if distances is not None and np.all(np.abs(distances) > 0) else first.slice_gap
    shape = (len(headers), first.rows, first.columns) if len(headers) > 1 else first.shape
    spacing = (gap, *first.pixel_spacing) if gap and first.pixel_spacing else None
    return ImageHeader(shape, spacing)


def file_image_header(path: str | Path) -> ImageHeader:
    """Shape and spacing of one DICOM file from its header."""
    return series_header([read_dicom_header(path)])


def series_image_header(paths: Sequence[str | Path]) -> ImageHeader:
    """Shape and spacing of a series of slice files from their headers."""
    headers = sort_slices([read_dicom_header(path) for path in paths])
    if len(headers) > 1:
        _check_stackable(headers)
    return series_header(headers)


def image_headers(paths: Iterable[str | Path]) -> list[DicomHeader]:
    """Headers of the DICOM images among ``paths``: non-image objects (DICOMDIR, reports) and
    repeated instances (:func:`unique_instances`) are skipped, with a log message.

    Raises
    ------
    DataSourceError
        When a file cannot be read as DICOM at all.
    """
    headers = []
    for path in paths:
        ds = _dataset(path, pixels=False, require_image=False)
        if "Rows" in ds and "Columns" in ds:
            headers.append(header_from_dataset(ds, path))
        elif "SOPClassUID" in ds:
            logger.info("%s: DICOM object without an image (%s), skipped", path, ds.SOPClassUID)
        else:
            raise DataSourceError(path, "not a DICOM file (corrupt or truncated)")
    return unique_instances(headers)


def unique_instances(headers: Iterable[DicomHeader]) -> list[DicomHeader]:
    """Drop files repeating a ``SOPInstanceUID`` already seen (the same image stored twice), with a warning.

    A duplicated image would otherwise count as two images of its patient, at distance zero.
    """
    seen: dict[str, str] = {}
    kept = []
    for header in headers:
        if header.sop_uid and header.sop_uid in seen:
            logger.warning("%s: same SOPInstanceUID as %s, skipped as a duplicate", header.path, seen[header.sop_uid])
            continue
        if header.sop_uid:
            seen[header.sop_uid] = header.path
        kept.append(header)
    return kept


def group_series(headers: Iterable[DicomHeader], location: str | Path) -> list[tuple[DicomHeader, ...]]:
    """Single-frame slices grouped into volumes by series, orientation, size, echo and time point.

    Multi-frame files stay on their own. Each group is sorted along the slice normal; a group of one
    is a 2D image.

    Raises
    ------
    DataSourceError
        When two slices of one group lie at the same position (naming both files).
    """
    groups: dict[tuple, list[DicomHeader]] = {}
    for header in headers:
        if header.frames > 1 or not header.series_uid:
            key: tuple = ("file", header.path)
        else:
            orientation = tuple(np.round(header.orientation, 3)) if header.orientation else None
            key = (header.series_uid, header.rows, header.columns, orientation, header.stack_key)
        groups.setdefault(key, []).append(header)
    result = []
    for members in groups.values():
        ordered = tuple(sort_slices(members))
        _check_distinct_positions(ordered, location)
        result.append(ordered)
    return sorted(result, key=lambda group: group[0].path)


def _check_distinct_positions(ordered: Sequence[DicomHeader], location: str | Path) -> None:
    distances = _slice_distances([h.positions[0] for h in ordered if h.positions], ordered[0].orientation)
    if distances is None or len(distances) != len(ordered) - 1:
        return
    for index in np.flatnonzero(np.abs(distances) < 1e-4):
        a, b = ordered[index].path, ordered[index + 1].path
        raise DataSourceError(location, f"DICOM series {ordered[0].series_uid} has two slices at the same position: {a} and {b} (pass series=0 to read every file as its own image)")
