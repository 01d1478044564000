"""A release folder's ``manifest.json``, read tolerantly, and the sha256 of its files.

monai-pso's own releases are opened with :func:`monai_pso.release.open_release` (schema checked); this
module also reads the manifests of other generators' releases, for the audit and the ledger. Fields read
(all optional):

- released files: ``files`` (a mapping of name to sha256, or a list of objects with ``path``/``file``/
  ``name`` and ``sha256``) or ``items`` (a list of objects with ``files``: names, no hashes);
- threshold: a number, or an object with ``value`` (or ``tau``): the saved threshold;
- fingerprints: ``index_fingerprint`` / ``embedder_fingerprint``, or ``index.fingerprint`` /
  ``embedder.fingerprint``, or inside the threshold object.

Examples
--------
>>> manifest = {"threshold": {"value": 0.1, "embedder_fingerprint": "e"}, "index_fingerprint": "i",
...             "items": [{"item_id": "a", "files": ["a.png"]}]}
>>> manifest_threshold(manifest), release_fingerprints(manifest), listed_files(manifest)
(0.1, ('i', 'e'), {'a.png': None})
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_pso.errors import DataSourceError
from monai_pso.io import read_json, sha256_file
from monai_pso.release.layout import MANIFEST_FILE


def read_manifest(release_dir: str | Path) -> dict[str, Any]:
    """The release's ``manifest.json``, or an error naming the file."""
    path = Path(release_dir) / MANIFEST_FILE
    manifest = read_json(path, what="release manifest", missing="release manifest not found (is this a release folder written by the gate?)")
    if not isinstance(manifest, dict):
        raise DataSourceError(path, "the release manifest must be a JSON object")
    return manifest


def listed_files(manifest: Mapping[str, Any]) -> dict[str, str | None] | None:
    """Released file names with their sha256 where the manifest gives one; ``None`` when it lists none."""
    listed = manifest.get("files")
    if isinstance(listed, Mapping):
        return {str(k): str(v["sha256"] if isinstance(v, Mapping) else v) for k, v in listed.items()}
    if isinstance(listed, list):
        name = lambda item: item.get("path") or item.get("file") or item.get("name")  # noqa: E731
        return {str(name(item)): item.get("sha256") for item in listed if isinstance(item, Mapping) and name(item)}
    items = manifest.get("items")
    if isinstance(items, list):
        return {str(f): None for item in items if isinstance(item, Mapping) for f in item.get("files", [])}
    return None


def manifest_threshold(manifest: Mapping[str, Any]) -> float | None:
    """The release threshold ``tau``, or ``None`` when the manifest has none."""
    threshold = manifest.get("threshold")
    if isinstance(threshold, Mapping):
        threshold = threshold.get("value", threshold.get("tau"))
    return None if threshold is None else float(threshold)


def release_fingerprints(manifest: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(index, embedder)`` fingerprints the release was made with (``None`` where not recorded)."""
    threshold = manifest.get("threshold") if isinstance(manifest.get("threshold"), Mapping) else {}
    found = []
    for part in ("index", "embedder"):
        nested = manifest.get(part) if isinstance(manifest.get(part), Mapping) else {}
        found.append(manifest.get(f"{part}_fingerprint") or nested.get("fingerprint") or threshold.get(f"{part}_fingerprint") or None)
    return found[0], found[1]


def hash_release(release_dir: str | Path, expected: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """sha256 of every file in the release folder but the manifest, checked against ``expected``.

    ``expected`` maps names to a sha256 (or ``None``: must exist, any content). Raises
    :class:`~monai_pso.errors.DataSourceError` naming the first file that is missing or differs.
    """
    release_dir = Path(release_dir)
    files = sorted(p for p in release_dir.rglob("*") if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith("."))
    hashes = {p.relative_to(release_dir).as_posix(): sha256_file(p) for p in files}
    for name, sha in (expected or {}).items():
        if name not in hashes:
            raise DataSourceError(release_dir / name, "a released file recorded for this release is missing")
        if sha is not None and hashes[name] != sha:
            raise DataSourceError(release_dir / name, "the released file changed after it was recorded (sha256 differs)")
    return hashes


def check_unchanged(release_dir: str | Path, recorded: Mapping[str, str]) -> None:
    """Raise unless the release folder holds exactly the ``recorded`` files with the recorded hashes."""
    current = hash_release(release_dir, recorded)
    added = sorted(set(current) - set(recorded))
    if added:
        raise DataSourceError(Path(release_dir) / added[0], "was added to the release after it was recorded")
