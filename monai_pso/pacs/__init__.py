"""PACS integration over DICOM networking (pynetdicom): send a gated release, fetch studies as a SOURCE.

- :func:`export_release`: C-STORE the released DICOM files of a release folder, then verify by C-FIND;
- :func:`fetch_studies`: C-FIND studies matching a query and C-GET them into a folder that is a SOURCE;
- :class:`PacsNode`: where the PACS is and which AE titles to use.

See ``docs/pacs.md``.
"""

from monai_pso.pacs.connection import PacsNode
from monai_pso.pacs.export import ExportReport, export_release
from monai_pso.pacs.fetch import FetchReport, fetch_studies, parse_query
from monai_pso.pacs.release import ReleasePlan, plan_release

__all__ = [
    "ExportReport",
    "FetchReport",
    "PacsNode",
    "ReleasePlan",
    "export_release",
    "fetch_studies",
    "parse_query",
    "plan_release",
]
