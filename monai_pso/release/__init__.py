"""Releases: the one place that writes and reads a release folder (layout, audit, summary, manifest, ledger).

:class:`ReleaseBuilder` writes every release (``gate``, generation, bundles) and publishes it atomically
after appending it to the ledger; :func:`open_release` reads one, checked against the schema. See
``docs/architecture.md`` and :mod:`monai_pso.release.layout`.
"""

from monai_pso.release.builder import ReleaseBuilder, ReleaseReport, count_items
from monai_pso.release.gate import gate_source
from monai_pso.release.generation import GuardedRelease, ReleaseWriter, release_provenance
from monai_pso.release.layout import RELEASE_FORMAT, release_name, salt_path
from monai_pso.release.ledger import LedgerEntry, append_entry, append_release, verify_ledger
from monai_pso.release.reader import Release, check_release, open_release, read_item_map

__all__ = [
    "GuardedRelease",
    "LedgerEntry",
    "RELEASE_FORMAT",
    "Release",
    "ReleaseBuilder",
    "ReleaseReport",
    "ReleaseWriter",
    "append_entry",
    "append_release",
    "check_release",
    "count_items",
    "gate_source",
    "open_release",
    "read_item_map",
    "release_name",
    "release_provenance",
    "salt_path",
    "verify_ledger",
]
