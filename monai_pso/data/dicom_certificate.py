"""The privacy certificate of a synthetic image, as it is recorded in (and read back from) a DICOM header.

Every DICOM file :func:`monai_pso.data.dicom_writer.write_dicom` writes carries its certificate twice:

- in *Image Comments* (0020,4000), human-readable in any viewer, e.g.
  ``SYNTHETIC image made by monai-pso 0.1.0 - not a patient. Privacy certificate: nn_distance=0.41 >= tau=0.30 (passed); ...``;
- in a private block of group ``0x0011`` with private creator ``MONAI-PSO`` (0011,0010), machine-readable:

=============  ====  ============================================================================
element        VR    value
=============  ====  ============================================================================
(0011,1001)    LO    ``SYNTHETIC`` (the marker :func:`is_synthetic` looks for)
(0011,1002)    LO    software: ``monai-pso <version>``
(0011,1003)    FD    tau, the privacy threshold
(0011,1004)    FD    nn_distance, the image's distance to the nearest training image
(0011,1005)    CS    ``PASSED`` when nn_distance >= tau, else ``FAILED``
(0011,1006)    LT    index fingerprint (the reference index the distance was measured against)
(0011,1007)    LT    embedder fingerprint
(0011,1008)    LT    release id
=============  ====  ============================================================================

(The ``10`` in ``10xx`` is the block pydicom reserves for the creator; readers must look the creator up
rather than assume the block, as :meth:`PrivacyCertificate.read_from` does.) Nothing about the nearest
training patient (not even a hash of their id) is written: the file must carry no trace of a patient.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset

from monai_pso import __version__
from monai_pso.errors import DicomWriteError

#: Private group and creator of the certificate block.
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "MONAI-PSO"
#: Value of (0011,xx01) that marks a file as a monai-pso synthetic image.
SYNTHETIC_MARKER = "SYNTHETIC"
SOFTWARE = f"monai-pso {__version__}"

# element offset within the block, VR, certificate field (None: a constant written by write_to)
_MARKER, _SOFTWARE, _TAU, _DISTANCE, _DECISION, _INDEX, _EMBEDDER, _RELEASE = range(1, 9)
_TEXT_FIELDS = {_INDEX: "index_fingerprint", _EMBEDDER: "embedder_fingerprint", _RELEASE: "release_id"}


@dataclass(frozen=True)
class PrivacyCertificate:
    """Why a synthetic image was judged safe to release: its distance to the training set and the threshold.

    Parameters
    ----------
    tau
        The calibrated privacy threshold (``distance < tau`` means too close to a training image).
    nn_distance
        Distance from the image to the nearest training image.
    index_fingerprint, embedder_fingerprint, release_id
        Provenance: which reference index and embedder measured the distance, and which release this is.

    Examples
    --------
    >>> cert = PrivacyCertificate.from_mapping({"threshold": 0.3, "nn_distance": 0.5, "release_id": "r1"})
    >>> cert.tau, cert.passed
    (0.3, True)
    """

    tau: float
    nn_distance: float
    index_fingerprint: str = ""
    embedder_fingerprint: str = ""
    release_id: str = ""

    @classmethod
    def from_mapping(cls, certificate: Mapping[str, object]) -> PrivacyCertificate:
        """Build from a dict with ``tau`` (or ``threshold``, as in ``audit.csv``), ``nn_distance`` and the
        optional provenance keys; other keys (e.g. ``nearest_patient_hash``) are ignored, never written.
        """
        tau = certificate.get("tau", certificate.get("threshold"))
        distance = certificate.get("nn_distance")
        values = {}
        for name, value in (("tau", tau), ("nn_distance", distance)):
            try:
                values[name] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise DicomWriteError(f"certificate: {name} must be a number, got {value!r}") from None
            if not math.isfinite(values[name]) or values[name] < 0:
                raise DicomWriteError(f"certificate: {name} must be a finite non-negative number, got {value!r}")
        text = {name: str(certificate.get(name) or "") for name in _TEXT_FIELDS.values()}
        return cls(values["tau"], values["nn_distance"], **text)

    @property
    def passed(self) -> bool:
        """``True`` when the image is at least ``tau`` away from every training image."""
        return self.nn_distance >= self.tau

    def comment(self) -> str:
        """The human-readable *Image Comments* text."""
        relation, decision = (">=", "passed") if self.passed else ("<", "FAILED")
        parts = [f"nn_distance={self.nn_distance:.6g} {relation} tau={self.tau:.6g} ({decision})"]
        parts += [f"{name}={getattr(self, name)}" for name in _TEXT_FIELDS.values() if getattr(self, name)]
        return f"SYNTHETIC image made by {SOFTWARE} - not a patient. Privacy certificate: " + "; ".join(parts)

    def write_to(self, ds: Dataset) -> None:
        """Record the certificate in ``ds`` (Image Comments and the ``MONAI-PSO`` private block)."""
        ds.ImageComments = self.comment()
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(_MARKER, "LO", SYNTHETIC_MARKER)
        block.add_new(_SOFTWARE, "LO", SOFTWARE)
        block.add_new(_TAU, "FD", self.tau)
        block.add_new(_DISTANCE, "FD", self.nn_distance)
        block.add_new(_DECISION, "CS", "PASSED" if self.passed else "FAILED")
        for offset, name in _TEXT_FIELDS.items():
            block.add_new(offset, "LT", getattr(self, name))

    @classmethod
    def read_from(cls, ds: Dataset) -> PrivacyCertificate | None:
        """The certificate recorded in ``ds``, or ``None`` when ``ds`` is not a monai-pso synthetic image.

        Examples
        --------
        >>> ds = Dataset()
        >>> PrivacyCertificate(0.3, 0.5, release_id="r1").write_to(ds)
        >>> PrivacyCertificate.read_from(ds).release_id, PrivacyCertificate.read_from(Dataset())
        ('r1', None)
        """
        if not is_synthetic(ds):
            return None
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        text = {name: _text(block[offset].value) if offset in block else "" for offset, name in _TEXT_FIELDS.items()}
        return cls(_number(block[_TAU].value), _number(block[_DISTANCE].value), **text)


# Private elements read from an implicit-VR file (a PACS may store or send one) have no known VR: pydicom
# gives their raw bytes (UN), which these decode.


def _number(value: object) -> float:
    if isinstance(value, bytes):
        return struct.unpack("<d", value)[0]
    return float(value)  # type: ignore[arg-type]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).rstrip(" \0")


def is_synthetic(ds: Dataset) -> bool:
    """``True`` when ``ds`` carries the monai-pso synthetic marker and a certificate.

    Examples
    --------
    >>> is_synthetic(Dataset())
    False
    """
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return False
    if _MARKER not in block or _TAU not in block or _DISTANCE not in block:
        return False
    return _text(block[_MARKER].value) == SYNTHETIC_MARKER
