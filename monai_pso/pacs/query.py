"""C-FIND in the Study Root information model: the matches of a query at one level.

Examples
--------
>>> identifier = query_identifier("IMAGE", {"SeriesInstanceUID": "1.2.3", "SOPInstanceUID": ""})
>>> identifier.QueryRetrieveLevel, identifier.SOPInstanceUID
('IMAGE', '')
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from monai_pso.errors import PacsError
from monai_pso.pacs.connection import check_status

#: C-FIND statuses meaning "a match follows".
PENDING = (0xFF00, 0xFF01)


def query_identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    """A query identifier: ``QueryRetrieveLevel`` plus matching (valued) and return (empty) keys."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


def find(assoc: Association, level: str, keys: Mapping[str, str]) -> list[Dataset]:
    """Every match of a Study Root C-FIND at ``level`` (``STUDY``, ``SERIES`` or ``IMAGE``).

    Raises
    ------
    PacsError
        When the PACS answers with a failure status or not at all.
    """
    matches = []
    for status, identifier in assoc.send_c_find(query_identifier(level, keys), StudyRootQueryRetrieveInformationModelFind):
        code = check_status(status, f"C-FIND at {level} level", assoc)
        if code in PENDING:
            matches.append(identifier)
        elif code != 0x0000:
            raise PacsError(f"C-FIND at {level} level failed with status 0x{code:04X} ({', '.join(f'{k}={v}' for k, v in keys.items() if v)})")
    return matches
