"""Pull studies from a PACS into a folder that is a SOURCE: C-FIND at STUDY level, then C-GET each study.

C-GET brings the instances back over the same association, so no port needs to be opened on this machine
and the PACS needs no route back to it (C-MOVE would need both); the PACS must support C-GET (Orthanc,
dcm4chee, most recent PACS do) and know the calling AE title.

Files are written as ``OUT/<PatientID>/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` exactly as the PACS sent
them (no decoding and re-encoding), each atomically; characters other than letters, digits, ``.``, ``_``
and ``-`` in folder names become ``_``. ``OUT`` can then be read with
``monai_pso.data.load_source("OUT")``.

Examples
--------
>>> parse_query(["PatientID=P001", "StudyDate=20240101-20241231"])
{'PatientID': 'P001', 'StudyDate': '20240101-20241231'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pynetdicom import StoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet
from tqdm import tqdm

from monai_pso.errors import PacsError
from monai_pso.io import write_atomically
from monai_pso.pacs.connection import PacsNode, associate, check_status
from monai_pso.pacs.query import PENDING, find, query_identifier

#: Storage SOP classes accepted during C-GET (pynetdicom's 120 common ones; an association holds at most 128).
RETRIEVABLE = [context.abstract_syntax for context in StoragePresentationContexts]
#: C-GET final statuses after which all (0x0000) or some (0xB000) instances arrived.
RETRIEVED = (0x0000, 0xB000)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class FetchReport:
    """What :func:`fetch_studies` did.

    Attributes
    ----------
    studies
        Study Instance UIDs matched by the query.
    files
        Files written, in arrival order.
    failed
        (study UID, reason) of studies not (completely) retrieved.
    """

    studies: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, out_dir: Path) -> str:
        """A few lines for the terminal."""
        lines = [f"{len(self.studies)} stud(y/ies) matched; {len(self.files)} file(s) written to {out_dir}"]
        lines += [f"  FAILED study {uid}: {reason}" for uid, reason in self.failed]
        return "\n".join(lines)


def parse_query(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a C-FIND query; keys must be DICOM keywords (PacsError otherwise)."""
    query: dict[str, str] = {}
    for pair in pairs:
        keyword, sep, value = pair.partition("=")
        keyword = keyword.strip()
        if not sep or not keyword:
            raise PacsError(f"--query {pair!r}: expected KEY=VALUE, e.g. PatientID=P001")
        if tag_for_keyword(keyword) is None or dictionary_VR(tag_for_keyword(keyword)) == "SQ":
            raise PacsError(f"--query {pair!r}: {keyword} is not a DICOM keyword for matching (e.g. PatientID, StudyDate, AccessionNumber, ModalitiesInStudy)")
        if keyword == "QueryRetrieveLevel" or keyword in query:
            raise PacsError(f"--query {pair!r}: {keyword} is set by fetch or given twice")
        query[keyword] = value
    return query


def fetch_studies(node: PacsNode, query: Mapping[str, str], out_dir: str | Path, progress: bool = True) -> FetchReport:
    """Retrieve every study matching ``query`` from ``node`` into ``out_dir``.

    Parameters
    ----------
    node
        The PACS.
    query
        C-FIND matching keys at STUDY level (e.g. ``{"PatientID": "P001"}``); at least one.
    out_dir
        Destination folder (created).
    progress
        Show a progress bar over studies.

    Raises
    ------
    PacsError
        Empty query, PACS unreachable, association rejected, or a C-FIND failure.
    """
    if not query:
        raise PacsError("fetch needs at least one --query KEY=VALUE (an empty query would pull the whole PACS)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    handler = (evt.EVT_C_STORE, _store_handler(out_dir, report.files))
    sop_classes = [StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet, *RETRIEVABLE]
    with associate(node, sop_classes, scp_roles=RETRIEVABLE, handlers=[handler]) as assoc:
        matches = find(assoc, "STUDY", {"StudyInstanceUID": "", "PatientID": "", **query})
        report.studies = list(dict.fromkeys(str(m.StudyInstanceUID) for m in matches if m.get("StudyInstanceUID")))
        for study_uid in tqdm(report.studies, desc="C-GET", unit="study", disable=not progress):
            problem = _get_study(assoc, study_uid)
            if problem:
                report.failed.append((study_uid, problem))
    return report


def _get_study(assoc: Association, study_uid: str) -> str | None:
    """C-GET one study; ``None`` on success, else what went wrong."""
    identifier = query_identifier("STUDY", {"StudyInstanceUID": study_uid})
    code, failed = None, 0
    try:
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            code = check_status(status, f"C-GET of study {study_uid}", assoc)
            if code not in PENDING:
                failed = int(status.get("NumberOfFailedSuboperations") or 0)
    except PacsError as error:
        return str(error)
    if code in RETRIEVED and not failed:
        return None
    return "no final response" if code is None else f"status 0x{code:04X}, {failed} instance(s) failed"


def _store_handler(out_dir: Path, written: list[Path]):
    """An EVT_C_STORE handler writing each arriving instance atomically under ``out_dir``."""

    def handle_store(event: Event) -> int:
        ds = event.dataset
        folder = out_dir / _safe_name(ds.get("PatientID", "")) / _safe_name(ds.get("StudyInstanceUID", ""))
        target = folder / f"{_safe_name(event.request.AffectedSOPInstanceUID)}.dcm"
        try:
            encoded = event.encoded_dataset()
            write_atomically(target, lambda stream: stream.write(encoded))  # creates the folder
        except OSError:
            return 0xA700  # out of resources: the PACS counts the instance as failed
        written.append(target)
        return 0x0000

    return handle_store


def _safe_name(value: object) -> str:
    """A folder or file name made from a header value (never empty, never ``.`` or ``..``)."""
    name = _UNSAFE.sub("_", str(value).strip()).lstrip(".")
    return name or "unknown"
