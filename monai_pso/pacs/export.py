"""Send a gated release to a PACS: C-STORE the cleared files, then check by C-FIND that the PACS holds them.

Only files :func:`~monai_pso.pacs.release.plan_release` clears are sent; refused files are listed in the
report and never leave. Verification asks the PACS, per series, for its instances at IMAGE level and
compares their SOP Instance UIDs with the ones sent.

Examples
--------
>>> report = ExportReport(node="ORTHANC@localhost:4242", plan=ReleasePlan())
>>> report.ok
False
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from tqdm import tqdm

from monai_pso.errors import PacsError
from monai_pso.pacs.connection import PacsNode, associate, check_status
from monai_pso.pacs.query import find
from monai_pso.pacs.release import ReleasePlan, plan_release

#: C-STORE statuses after which the PACS holds the instance (success, and the coercion/discard warnings).
STORED = (0x0000, 0xB000, 0xB006, 0xB007)


@dataclass
class ExportReport:
    """What :func:`export_release` did.

    Attributes
    ----------
    node
        The PACS, as ``AET@HOST:PORT``.
    plan
        The release plan: files cleared, refused and missing.
    failed
        (file, reason) of cleared files the PACS did not store.
    verified
        Files stored and then found by C-FIND.
    unverified
        Files stored but not found by C-FIND (or not checked: see ``verification_error``).
    verification_error
        Why the C-FIND verification could not run, if it could not.
    """

    node: str
    plan: ReleasePlan
    failed: list[tuple[Path, str]] = field(default_factory=list)
    verified: list[Path] = field(default_factory=list)
    unverified: list[Path] = field(default_factory=list)
    verification_error: str = ""

    @property
    def ok(self) -> bool:
        """Something was sent, and every cleared file was stored and verified."""
        return bool(self.verified) and not self.failed and not self.unverified

    def summary(self) -> str:
        """A few lines for the terminal: counts, then every refused, failed or unverified file."""
        items = {item for item, _ in self.plan.to_send}
        lines = [
            f"{self.node}: sent {len(self.verified) + len(self.unverified)} of {len(self.plan.to_send)} released "
            f"DICOM file(s) ({len(items)} item(s)); verified by C-FIND: {len(self.verified)}",
            f"refused (not sent): {len(self.plan.refused)}",
            *(f"  refused {path}: {reason}" for path, reason in self.plan.refused),
            *(f"  FAILED {path}: {reason}" for path, reason in self.failed),
            *(f"  NOT FOUND after sending: {path}" for path in self.unverified if not self.verification_error),
        ]
        if self.verification_error:
            lines.append(f"sent but NOT VERIFIED: {self.verification_error}")
        if self.plan.missing:
            lines.append(f"released item(s) without a DICOM file to send: {', '.join(self.plan.missing)}")
        return "\n".join(lines)


def export_release(release_dir: str | Path, node: PacsNode, progress: bool = True) -> ExportReport:
    """C-STORE the released DICOM files of ``release_dir`` to ``node`` and verify them by C-FIND.

    Parameters
    ----------
    release_dir
        A release folder with ``audit.csv`` (see :mod:`monai_pso.pacs.release`).
    node
        The PACS.
    progress
        Show a progress bar while sending.

    Returns
    -------
    ExportReport
        Nothing is sent (and ``ok`` is ``False``) when no file is cleared.

    Raises
    ------
    PacsError
        ``audit.csv`` missing or malformed, PACS unreachable, association rejected or aborted.
    """
    plan = plan_release(release_dir)
    report = ExportReport(str(node), plan)
    if not plan.to_send:
        return report
    datasets = {path: pydicom.dcmread(path) for _, path in plan.to_send}
    sop_classes = sorted({str(ds.SOPClassUID) for ds in datasets.values()})
    with associate(node, [*sop_classes, StudyRootQueryRetrieveInformationModelFind]) as assoc:
        stored = _store_all(assoc, datasets, report, progress)
        try:
            found = _find_instances(assoc, stored) if stored else set()
        except PacsError as error:
            found, report.verification_error = set(), str(error)
    for path, ds in stored.items():
        (report.verified if ds.SOPInstanceUID in found else report.unverified).append(path)
    return report


def _store_all(assoc: Association, datasets: dict[Path, Dataset], report: ExportReport, progress: bool) -> dict[Path, Dataset]:
    """C-STORE each dataset; the ones the PACS stored, failures recorded in ``report``."""
    stored = {}
    for path, ds in tqdm(datasets.items(), desc="C-STORE", unit="file", disable=not progress):
        if not assoc.is_established:
            report.failed.append((path, "not sent: the association ended"))
            continue
        try:
            code = check_status(assoc.send_c_store(ds), f"C-STORE {path}", assoc)
        except (PacsError, ValueError, RuntimeError) as error:
            report.failed.append((path, str(error)))
            continue
        if code in STORED:
            stored[path] = ds
        else:
            report.failed.append((path, f"PACS answered status 0x{code:04X}"))
    return stored


def _find_instances(assoc: Association, stored: dict[Path, Dataset]) -> set[str]:
    """SOP Instance UIDs the PACS holds in the series that were stored (one IMAGE-level C-FIND per series)."""
    series = defaultdict(set)
    for ds in stored.values():
        series[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))].add(str(ds.SOPInstanceUID))
    found: set[str] = set()
    for study_uid, series_uid in series:
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "SOPInstanceUID": ""}
        found |= {str(match.SOPInstanceUID) for match in find(assoc, "IMAGE", keys) if "SOPInstanceUID" in match}
    return found
