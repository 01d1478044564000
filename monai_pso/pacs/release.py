"""Which DICOM files of a release may leave: only the files of items the guard released.

The release is opened with :func:`monai_pso.release.open_release` (its manifest, summary and
``audit.csv`` checked against the one release schema, whoever wrote it: ``monai-pso gate`` or
generation). The manifest's ``files`` says which item each released file belongs to.

A DICOM file is **refused** (never sent) when:

- the manifest lists it for no released item (e.g. a patient's file copied into the folder by mistake);
- its item's row in ``audit.csv`` does not say ``released=true``;
- its sha256 differs from the one recorded when it was written;
- its header carries no monai-pso certificate, or the certificate says ``nn_distance < tau``.

Files and folders whose names start with ``.`` and files that are not DICOM are ignored. Without a
readable release nothing is sent.

Examples
--------
>>> plan = plan_release("GENERATED_RELEASE")  # doctest: +SKIP
>>> [item for item, _ in plan.to_send], plan.refused  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom

from monai_pso.data.dicom_certificate import PrivacyCertificate
from monai_pso.errors import MonaiPsoError, PacsError
from monai_pso.io import sha256_file


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


def _refusal(path: Path, relative: str, listed: dict[str, tuple[str, str]], released: set[str]) -> str | None:
    """Why ``path`` must not leave, or ``None`` when it may."""
    if relative not in listed:
        return "not a released file of this release (not in manifest.json)"
    item, sha256 = listed[relative]
    if item not in released:
        return "audit: released=false"
    if sha256_file(path) != sha256:
        return "changed since it was released (sha256 differs from the manifest)"
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
    from monai_pso.release import open_release

    release_dir = Path(release_dir)
    try:
        release = open_release(release_dir)
    except MonaiPsoError as error:
        raise PacsError(f"{error}; nothing is sent") from None
    listed = {entry["path"]: (entry["item"], entry["sha256"]) for entry in release.manifest["files"]}
    released = set(release.released_items)
    plan = ReleasePlan()
    for path in _dicom_files(release_dir):
        relative = path.relative_to(release_dir).as_posix()
        reason = _refusal(path, relative, listed, released)
        if reason is None:
            plan.to_send.append((listed[relative][0], path))
        else:
            plan.refused.append((path, reason))
    sent_items = {item for item, _ in plan.to_send}
    plan.missing = [item for item in release.released_items if item not in sent_items]
    return plan
