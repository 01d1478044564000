"""Reading a release: :func:`open_release` checks a folder against the one release schema and returns it.

Every reader of monai-pso releases (PACS export, the audit, the downstream studies, the CLI's report) opens
them here, so a release made by ``monai-pso gate`` and one made by generation read the same way.
:func:`open_release` refuses a folder whose ``manifest.json``, ``summary.json`` or ``audit.csv`` does not
follow :mod:`monai_pso.release.layout`: another format, missing counts, other audit columns than the
guard's checks give, an item listed twice, counts that disagree with the rows, or a released item the
manifest lists no file for.

Examples
--------
>>> open_release("no/such/release")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
monai_pso.errors.DataSourceError: no/such/release/manifest.json: release manifest not found ...
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_pso.errors import DataSourceError
from monai_pso.guard.audit_log import audit_columns
from monai_pso.io import read_json
from monai_pso.release import layout
from monai_pso.release.builder import count_items
from monai_pso.release.manifest import read_manifest


@dataclass
class Release:
    """A release folder's records: its manifest, summary, and the header and rows of ``audit.csv`` (as text)."""

    path: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    columns: list[str]
    rows: list[dict[str, str]]

    @property
    def checks(self) -> list[str]:
        """The guard's check names, in the order of ``audit.csv``'s columns (``summary.json`` sorts its keys)."""
        names = list(self.summary["checks"])
        position = {name: self.columns.index(f"{name}_distance") if f"{name}_distance" in self.columns else len(self.columns) for name in names}
        return sorted(names, key=position.__getitem__)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.summary["counts"])

    @property
    def released_items(self) -> list[str]:
        """Items the guard released, in audit order."""
        return [row["item"] for row in self.rows if row["released"] == "true"]

    def files_by_item(self) -> dict[str, list[str]]:
        """Released item -> its files (paths relative to the release), from the manifest."""
        files: dict[str, list[str]] = {}
        for entry in self.manifest["files"]:
            files.setdefault(entry["item"], []).append(entry["path"])
        return files

    def item_details(self) -> dict[str, dict[str, Any]]:
        """Released item -> its manifest entry (files, and the generator's request fields: seed, condition...)."""
        return {entry["item"]: entry for entry in self.manifest["items"]}


def read_rows(path: Path, missing: str = "missing: without the guard's audit nothing of this release is trusted") -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows, as text, of a release's CSV file; ``missing``: the error's words when it is absent."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return list(reader.fieldnames or []), list(reader)
    except FileNotFoundError:
        raise DataSourceError(path, missing) from None


def _as_counted(row: dict[str, str]) -> dict[str, Any]:
    return {"released": row["released"] == "true", "outcome": row["outcome"], "draws": int(row["draws"] or 0)}


def check_release(release: Release) -> None:
    """Raise :class:`~monai_pso.errors.DataSourceError` naming the file and the first way ``release`` breaks the schema."""
    path = release.path
    if release.manifest.get("format") != layout.RELEASE_FORMAT or release.summary.get("format") != layout.RELEASE_FORMAT:
        raise DataSourceError(path / layout.MANIFEST_FILE, f"not a release of format {layout.RELEASE_FORMAT} (written by another version?)")
    missing = [key for key in layout.COUNT_KEYS if key not in release.summary.get("counts", {})]
    if missing or not release.summary.get("checks"):
        raise DataSourceError(path / layout.SUMMARY_FILE, f"lacks counts {', '.join(missing) or ''} or checks")
    columns = list(audit_columns(release.checks))
    if release.columns != columns:
        raise DataSourceError(path / layout.AUDIT_FILE, f"has columns {', '.join(release.columns)}; expected {', '.join(columns)}")
    items = [row["item"] for row in release.rows]
    if len(set(items)) != len(items):
        raise DataSourceError(path / layout.AUDIT_FILE, "lists an item twice (one row per item)")
    if count_items([_as_counted(r) for r in release.rows]) != release.counts:
        raise DataSourceError(path / layout.SUMMARY_FILE, "counts disagree with the rows of audit.csv")
    listed = release.files_by_item()
    unlisted = [item for item in release.released_items if item not in listed]
    if unlisted or set(listed) - set(release.released_items):
        raise DataSourceError(path / layout.MANIFEST_FILE, f"files and released items of audit.csv disagree ({(unlisted or sorted(set(listed)))[0]})")


def open_release(release_dir: str | Path) -> Release:
    """The release in ``release_dir``, checked against the schema (:func:`check_release`)."""
    path = Path(release_dir)
    manifest = read_manifest(path)
    summary = read_json(path / layout.SUMMARY_FILE, what="release summary")
    header, rows = read_rows(path / layout.AUDIT_FILE)
    release = Release(path, manifest, summary if isinstance(summary, dict) else {}, header, rows)
    check_release(release)
    return release


def read_item_map(release_dir: str | Path) -> dict[str, str]:
    """The data owner's private map of a release (``RELEASE_DIR.items.csv``): released id -> the item's own id."""
    path = layout.item_map_path(release_dir)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return {row["released_item"]: row["item"] for row in csv.DictReader(handle)}
    except FileNotFoundError:
        raise DataSourceError(path, "missing: the map of released ids is kept beside the release by whoever made it") from None
