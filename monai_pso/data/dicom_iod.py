"""What each modality's DICOM IOD needs: SOP class, pixel encoding of ``[0, 1]`` values, modality modules.

=========  ==============================  =====================================================================
modality   SOP class                       stored pixels -> real-world values
=========  ==============================  =====================================================================
``ct``     CT Image Storage                uint16, RescaleSlope 1, RescaleIntercept = window low, RescaleType HU:
                                           ``[0, 1]`` maps back onto the HU window of the intensity preset
                                           (``ct`` [-1000, 1000], ``ct_lung``, ``ct_soft``)
``mri``    MR Image Storage                uint16 ``round(v * 4095)``, 12 bits stored, no rescale (MR values are
                                           relative; the ``mri`` preset is percentile-based)
``pet``    PET Image Storage               uint16 ``round(v * 32767)``, RescaleSlope 1, Units ``PROPCNTS``
                                           (proportional to counts: the ``pet`` preset is a linear map of counts)
``xray``   Digital X-Ray Image Storage -   uint16 ``round(v * 4095)``, 12 bits, MONOCHROME2, RescaleType US,
           For Presentation (DX)           PresentationIntentType ``FOR PRESENTATION``; 2D only (a projection)
``us``,    Secondary Capture Image         uint16 ``round(v * 10000)``, 14 bits, RescaleSlope 0.0001, RescaleType US:
``other``  Storage                         real-world values are the ``[0, 1]`` values themselves (read back with
                                           ``normalize=none``); Modality ``US`` or ``OT``; Conversion Type ``SYN``
=========  ==============================  =====================================================================

CT, MR and PET images carry the Image Plane module (position, orientation, pixel spacing); a DX image has
no patient-based geometry and records its spacing as *Imager Pixel Spacing* instead. Secondary Capture
images carry the Image Plane attributes too, beyond the IOD (a *Standard Extended SOP Class*; validators
warn), so that a volume written as SC slices keeps its geometry when read back.

Examples
--------
>>> profile = modality_profile("ct")
>>> profile.dicom_modality, profile.to_stored(np.array([0.0, 0.5, 1.0])).tolist()
('CT', [0, 1000, 2000])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
)

from monai_pso.errors import DicomWriteError

#: CT intensity presets whose HU window write_dicom can invert (see :mod:`monai_pso.data.normalize`).
CT_PRESETS = ("ct", "ct_lung", "ct_soft")


@dataclass(frozen=True)
class SliceGeometry:
    """Where one written image (a 2D image or one slice of a volume) sits.

    Parameters
    ----------
    index
        Slice number, 0-based (0 for a 2D image).
    count
        Number of slices in the series (1 for a 2D image).
    pixel_spacing
        (row spacing, column spacing) in mm: the DICOM *Pixel Spacing* order.
    slice_spacing
        Distance between slices in mm, ``None`` for a 2D image.
    """

    index: int
    count: int
    pixel_spacing: tuple[float, float]
    slice_spacing: float | None

    @property
    def is_volume(self) -> bool:
        return self.slice_spacing is not None


#: Adds a modality's own attributes to a dataset, given the slice it holds.
ModuleWriter = Callable[[Dataset, SliceGeometry], None]


@dataclass(frozen=True)
class ModalityProfile:
    """How one modality is written.

    Parameters
    ----------
    dicom_modality
        The *Modality* (0008,0060) value.
    sop_class_uid
        Storage SOP class.
    max_stored
        ``[0, 1]`` maps linearly onto stored values ``[0, max_stored]`` (uint16).
    bits_stored
        *Bits Stored* (enough for ``max_stored``).
    rescale
        (*Rescale Slope*, *Rescale Intercept*, *Rescale Type* or ``None`` where the IOD has none), or
        ``None`` when the IOD has no rescale.
    image_plane
        Whether the IOD carries the Image Plane module (patient-based position and orientation).
    image_type
        *Image Type*: ``DERIVED\\SECONDARY`` (plus a third value where the IOD expects one); PET only
        allows ``PRIMARY`` as value 2, so PET images are ``DERIVED\\PRIMARY``.
    write_modules
        Adds the modality-specific modules.
    """

    dicom_modality: str
    sop_class_uid: UID
    max_stored: int
    bits_stored: int
    rescale: tuple[float, float, str | None] | None
    image_plane: bool
    image_type: tuple[str, ...]
    write_modules: ModuleWriter

    def to_stored(self, image: np.ndarray) -> np.ndarray:
        """Map values in ``[0, 1]`` (clipped) to stored uint16 pixel values."""
        return np.rint(np.clip(image, 0.0, 1.0) * self.max_stored).astype(np.uint16)

    def to_real(self, stored: np.ndarray) -> np.ndarray:
        """Real-world values (HU for CT) of stored pixel values."""
        slope, intercept = self.rescale[:2] if self.rescale else (1.0, 0.0)
        return stored.astype(np.float64) * slope + intercept

    @property
    def window(self) -> tuple[float, float]:
        """(*Window Center*, *Window Width*) showing the whole ``[0, 1]`` range, in real-world values."""
        low, high = self.to_real(np.array([0, self.max_stored]))
        return float((low + high) / 2), float(high - low)


def _series_laterality_and_position(ds: Dataset) -> None:
    # General Series, Type 2C: Laterality present and empty (unknown: a synthetic image shows no real
    # body side); Patient Position HFS by convention, as no patient lay in a scanner
    ds.Laterality = None
    if ds.Modality in ("CT", "MR"):
        ds.PatientPosition = "HFS"


def _ct_modules(ds: Dataset, geometry: SliceGeometry) -> None:
    _series_laterality_and_position(ds)
    ds.KVP = None
    ds.AcquisitionNumber = None


def _mr_modules(ds: Dataset, geometry: SliceGeometry) -> None:
    _series_laterality_and_position(ds)
    ds.ScanningSequence = "RM"  # research mode: no real pulse sequence produced this image
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = None
    ds.MRAcquisitionType = "3D" if geometry.is_volume else "2D"
    ds.RepetitionTime = None
    ds.EchoTime = None
    ds.EchoTrainLength = None


def _pet_modules(ds: Dataset, geometry: SliceGeometry) -> None:
    _series_laterality_and_position(ds)
    # PET Series
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
    ds.Units = "PROPCNTS"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.NumberOfSlices = geometry.count
    ds.DecayCorrection = "NONE"
    ds.CorrectedImage = None
    ds.CollimatorType = None
    # PET Isotope and NM/PET Patient Orientation (Type 2: present, empty)
    ds.RadiopharmaceuticalInformationSequence = Sequence()
    ds.PatientOrientationCodeSequence = Sequence()
    ds.PatientGantryRelationshipCodeSequence = Sequence()
    # PET Image
    ds.FrameReferenceTime = 0
    ds.ImageIndex = geometry.index + 1
    ds.AcquisitionDate, ds.AcquisitionTime = ds.StudyDate, ds.StudyTime
    ds.ActualFrameDuration = None


def _dx_modules(ds: Dataset, geometry: SliceGeometry) -> None:
    if geometry.is_volume:
        raise DicomWriteError("modality=xray: an X-ray image is a 2D projection; a 3D volume cannot be written as DX")
    # DX Series, DX Anatomy Imaged, DX Image, DX Detector, Acquisition Context
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = Sequence()
    # conventional display of a frontal radiograph: rows towards the patient's left, columns towards the feet
    ds.PatientOrientation = ["L", "F"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.PresentationLUTShape = "IDENTITY"
    ds.DetectorType = None
    ds.ImagerPixelSpacing = list(geometry.pixel_spacing)
    ds.AcquisitionContextSequence = Sequence()


def _sc_modules(ds: Dataset, geometry: SliceGeometry) -> None:
    _series_laterality_and_position(ds)
    ds.PatientOrientation = None  # General Image, Type 2C: no patient-based orientation is known
    # SC Equipment: Conversion Type SYN, "synthetic image"
    ds.ConversionType = "SYN"


def _ct_profile(preset: str) -> ModalityProfile:
    from monai_pso.data.normalize import PRESETS

    if preset not in CT_PRESETS:
        raise DicomWriteError(f"preset={preset}: a CT image needs one of the HU presets {', '.join(CT_PRESETS)}")
    window = PRESETS[preset]
    low, high = float(window.a_min), float(window.a_max)
    return ModalityProfile("CT", CTImageStorage, int(round(high - low)), 16, (1.0, low, "HU"), True, _SECONDARY + ("AXIAL",), _ct_modules)


_SECONDARY = ("DERIVED", "SECONDARY")

_PROFILES: dict[str, ModalityProfile] = {
    "mri": ModalityProfile("MR", MRImageStorage, 4095, 12, None, True, _SECONDARY + ("OTHER",), _mr_modules),
    "pet": ModalityProfile("PT", PositronEmissionTomographyImageStorage, 32767, 16, (1.0, 0.0, None), True, ("DERIVED", "PRIMARY"), _pet_modules),
    "xray": ModalityProfile("DX", DigitalXRayImageStorageForPresentation, 4095, 12, (1.0, 0.0, "US"), False, _SECONDARY, _dx_modules),
    "us": ModalityProfile("US", SecondaryCaptureImageStorage, 10000, 14, (0.0001, 0.0, "US"), True, _SECONDARY, _sc_modules),
    "other": ModalityProfile("OT", SecondaryCaptureImageStorage, 10000, 14, (0.0001, 0.0, "US"), True, _SECONDARY, _sc_modules),
}

#: Modalities write_dicom accepts: every one of :data:`monai_pso.data.records.MODALITIES`.
WRITABLE_MODALITIES = ("ct", *_PROFILES)


def modality_profile(modality: str, preset: str = "ct") -> ModalityProfile:
    """The profile of a monai-pso modality (``ct``, ``mri``, ``pet``, ``xray``, ``us``, ``other``).

    Parameters
    ----------
    modality
        monai-pso modality name.
    preset
        For CT only: the intensity preset whose HU window ``[0, 1]`` came from.

    Examples
    --------
    >>> modality_profile("ct", "ct_soft").rescale
    (1.0, -160.0, 'HU')
    """
    if modality == "ct":
        return _ct_profile(preset)
    if modality not in _PROFILES:
        raise DicomWriteError(f"modality={modality}: cannot be written as DICOM; choose one of {', '.join(WRITABLE_MODALITIES)}")
    return _PROFILES[modality]
