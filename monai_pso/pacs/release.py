"""Which DICOM files of a release folder may leave: only those of items the gate released.

A release folder (written by ``monai-pso gate ... --format dicom``) holds ``audit.csv`` (columns ``item``
and ``released``, ``true``/``false``, among others) and the DICOM files :func:`~monai_pso.data.write_dicom`
wrote: ``<item>.dcm`` for a 2D image, ``<item>/<slice>.dcm`` for a volume.

**Matching a file to its audit item**: the path of the file relative to the release folder is read from the
outside in (its folders, then the file name without ``.dcm``); the first name that is an ``item`` of
``audit.csv`` is the file's item. So ``item7.dcm``, ``item7/0001.dcm`` and ``images/item7.dcm`` all belong
to ``item7``.

A DICOM file is **refused** (never sent) when:

- no audit entry matches it;
- its audit entry says ``released=false`` (or anything but ``true``);
- its header carries no monai-pso certificate (it is not a synthetic image monai-pso wrote: e.g. a patient's
  file copied into the folder by mistake);
- its header certificate says ``nn_distance < tau``.

Files and folders whose names start with ``.`` (temporary files of atomic writes) and files that are not
DICOM (``audit.csv``, ``manifest.json``, PNGs) are ignored. Without ``audit.csv`` nothing is sent.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> from monai_pso.data.dicom_writer import write_dicom
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "audit.csv").write_text("item,released\\nok,true\\nclose,false\\n")
>>> for item in ("ok", "close", "stray"):
...     _ = write_dicom(np.zeros((1, 4, 4)), folder / item, modality="mri", spacing=None, certificate={"tau": 1, "nn_distance": 2})
>>> plan = plan_release(folder)
>>> [item for item, _ in plan.to_send], [reason for _, reason in plan.refused]
(['ok'], ['audit: released=false', 'no entry in audit.csv'])
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom

from monai_pso.data.dicom_certificate import PrivacyCertificate
from monai_pso.errors import PacsError

AUDIT_FILE = "audit.csv"


@dataclass
class ReleasePlan:
    """What :func:`plan_release` found in a release folder.

    Attributes
    ----------
    to_send
        (item, file) of every DICOM file cleared to leave, in path order.
    refused
        (file, reason) of every DICOM file that must not leave.
    missing
        Released items with no DICOM file cleared to send (written in another format, or refused).
    """

    to_send: list[tuple[str, Path]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def read_audit(release_dir: Path) -> dict[str, bool]:
    """``item -> released`` from ``release_dir/audit.csv`` (PacsError when missing or malformed).

    Only the text ``true`` (any case) releases; anything else, an empty cell included, does not.
    """
    path = release_dir / AUDIT_FILE
    if not path.is_file():
        raise PacsError(f"{path}: missing; without the gate's audit nothing is sent")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
        columns = set(rows[0]) if rows else set()
    if rows and not {"item", "released"} <= columns:
        raise PacsError(f"{path}: needs the columns item and released, found {', '.join(sorted(columns))}")
    audit: dict[str, bool] = {}
    for row in rows:  # an item listed twice is released only if every row says so
        audit[row["item"]] = audit.get(row["item"], True) and str(row["released"]).strip().lower() == "true"
    return audit


def _item_of(relative: Path, audit: dict[str, bool]) -> str | None:
    names = [*relative.parts[:-1], relative.name.removesuffix(".dcm")]
    return next((name for name in names if name in audit), None)


def _refusal(path: Path, item: str | None, audit: dict[str, bool]) -> str | None:
    """Why ``path`` must not leave, or ``None`` when it may."""
    if item is None:
        return f"no entry in {AUDIT_FILE}"
    if not audit[item]:
        return "audit: released=false"
    try:
        certificate = PrivacyCertificate.read_from(pydicom.dcmread(path, stop_before_pixels=True))
    except (InvalidDicomError, OSError, ValueError) as error:
        return f"unreadable DICOM header ({error})"
    if certificate is None:
        return "not a monai-pso synthetic image (no MONAI-PSO certificate in the header)"
    if not certificate.passed:
        return f"header certificate: nn_distance={certificate.nn_distance:.6g} < tau={certificate.tau:.6g}"
    return None


def _dicom_files(release_dir: Path) -> list[Path]:
    return sorted(
        path for path in release_dir.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(release_dir).parts) and is_dicom(path)
    )


def plan_release(release_dir: str | Path) -> ReleasePlan:
    """Sort the DICOM files of ``release_dir`` into cleared and refused (see the module docstring)."""
    release_dir = Path(release_dir)
    audit = read_audit(release_dir)
    plan = ReleasePlan()
    for path in _dicom_files(release_dir):
        item = _item_of(path.relative_to(release_dir), audit)
        reason = _refusal(path, item, audit)
        if reason is None:
            plan.to_send.append((item, path))
        else:
            plan.refused.append((path, reason))
    sent_items = {item for item, _ in plan.to_send}
    plan.missing = [item for item, released in audit.items() if released and item not in sent_items]
    return plan
