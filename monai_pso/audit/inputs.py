"""What an audit reads from disk: the release, the index (its training items), the holdout and control.

- A release folder (written by the gate) is read as a SOURCE folder; all its images are released,
  whatever split the folder reader assigns, or, when its ``manifest.json`` lists the released files,
  those images only. The manifest (optional, for releases of other generators) also gives the
  threshold and the index and embedder fingerprints.
- The index gives the training item and patient ids, its fingerprint
  (:attr:`monai_pso.index.ReferenceIndex.fingerprint`, a digest of its content) and the embedder
  the guard used. The training *images* come from the SOURCE the index was built from (its
  manifest records it; the phantom is regenerated deterministically) or from ``--training``, keeping
  only the items the index holds.
- Holdout and control are SOURCE strings plus a split (``all`` takes every record).
- The cumulative audit takes the union of every release in the index's ledger, after verifying the
  ledger's chain and every recorded file's sha256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monai_pso.data import DataSource, ImageRecord, load_image, load_source
from monai_pso.data.records import SPLITS
from monai_pso.embed.base import Embedder
from monai_pso.errors import DataSourceError, FingerprintMismatchError
from monai_pso.release.ledger import LedgerEntry, verify_ledger
from monai_pso.release.manifest import check_unchanged, listed_files, manifest_threshold, read_manifest, release_fingerprints

if TYPE_CHECKING:
    from monai_pso.index.reference import ReferenceIndex

#: Splits a cohort can be taken from; ``all`` means every record of the source.
COHORT_SPLITS = (*SPLITS, "all")

_SPLIT_SUFFIX = re.compile(r"^(?P<source>.*) \[split=[a-z,]+\]$")


@dataclass
class Release:
    """Released images and what their manifests say (one manifest per release folder)."""

    paths: list[Path]
    records: list[ImageRecord]
    manifests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def threshold(self) -> float | None:
        """The (single) threshold of the release(s), or ``None`` when unknown or not unique."""
        values = {manifest_threshold(m) for m in self.manifests} - {None}
        return values.pop() if len(values) == 1 else None


@dataclass
class IndexReference:
    """The facts about an index that an audit needs."""

    directory: Path
    fingerprint: str
    source: str
    item_ids: list[str]
    patient_ids: list[str]
    embedder_settings: dict[str, Any] | None
    embedder_fingerprint: str | None
    index: ReferenceIndex


def read_index_reference(index_dir: str | Path) -> IndexReference:
    """Load the index in ``index_dir`` (every file's sha256 verified) and keep what the audit needs."""
    from monai_pso.index.reference import ReferenceIndex

    index = ReferenceIndex.load(index_dir, mmap=True)
    return IndexReference(
        Path(index_dir).resolve(),
        index.fingerprint,
        index.source,
        list(index.item_ids),
        list(index.patient_ids),
        dict(index.embedder.settings) if index.embedder else None,
        index.embedder.fingerprint if index.embedder else None,
        index,
    )


def cohort_records(source: str | DataSource, split: str) -> list[ImageRecord]:
    """The records of ``split`` (or every record for ``all``) of a SOURCE."""
    if split not in COHORT_SPLITS:
        raise DataSourceError(str(split), f"unknown split (expected one of {', '.join(COHORT_SPLITS)})")
    dataset = load_source(source)
    records = list(dataset if split == "all" else dataset.split(split))
    if not records:
        raise DataSourceError(dataset.description, f"holds no images in split {split!r}")
    return records


def training_records(reference: IndexReference, training: str | DataSource | None = None) -> list[ImageRecord]:
    """The training images behind the index: its items, read from ``training`` or the index's source."""
    if training is None:
        match = _SPLIT_SUFFIX.match(reference.source)
        training = match.group("source") if match else reference.source
    dataset = load_source(training)
    wanted = dict(zip(reference.item_ids, reference.patient_ids))
    records = [r for r in dataset if r.item_id in wanted]
    where = dataset.description
    if not records:
        raise DataSourceError(where, f"holds none of the {len(wanted)} items of the index in {reference.directory}; pass the training SOURCE with --training")
    moved = [r.item_id for r in records if r.patient_id != wanted[r.item_id]]
    if moved:
        raise DataSourceError(where, f"item(s) {', '.join(moved[:3])} belong to other patients than in the index; not the index's training data")
    missing = len(wanted) - len(records)
    if missing:
        raise DataSourceError(where, f"lacks {missing} of the index's {len(wanted)} training items; pass the training SOURCE with --training")
    return records


def check_training_images(records: list[ImageRecord], reference: IndexReference, embedder: Embedder, sample: int = 8, tolerance: float = 1e-5) -> None:
    """Raise unless re-read training images are the ones the index holds (a SOURCE read with other
    options can repeat item ids with other pixels): a few, embedded with the guard's embedder, must lie
    at distance ~0 from their own item in the index."""
    picked = records[:: max(1, len(records) // sample)][:sample]
    found = reference.index.nearest_items(embedder.embed(np.stack([load_image(r) for r in picked])))
    wrong = [r.item_id for r, distance in zip(picked, found.distance) if distance > tolerance]
    if wrong:
        raise DataSourceError(
            reference.source, f"item(s) {', '.join(wrong[:3])} differ from the images indexed in {reference.directory}; pass the training SOURCE with --training"
        )


def _check_index(manifest: dict[str, Any], reference: IndexReference | None, path: Path) -> None:
    recorded = release_fingerprints(manifest)[0]
    if reference is not None and recorded is not None and recorded != reference.fingerprint:
        raise FingerprintMismatchError(
            f"{path}: the release was gated against index {recorded[:16]}, not the index in {reference.directory} ({reference.fingerprint[:16]})"
        )


def read_release(release_dir: str | Path, reference: IndexReference | None = None) -> Release:
    """A release folder's images (every split) and its manifest, when it has one."""
    path = Path(release_dir).resolve()
    if not path.is_dir():
        raise DataSourceError(path, "release folder not found")
    records = list(load_source(f"{path}?mixed_shapes=1"))  # a plot beside the images must not stop the reader
    manifests = []
    if (path / "manifest.json").exists():
        manifests.append(read_manifest(path))
        _check_index(manifests[0], reference, path)
        listed = listed_files(manifests[0])
        if listed is not None:  # other pictures in the folder (a plot of the gate) are not released images
            records = [r for r in records if _listed(r, path, listed)]
            if not records:
                raise DataSourceError(path / "manifest.json", "lists none of the images in the release folder")
    return Release([path], records, manifests)


def _listed(record: ImageRecord, folder: Path, listed: dict[str, str | None]) -> bool:
    """Whether every file of the record's image is one the manifest lists as released."""
    files = record.image if isinstance(record.image, tuple) else (record.image,)
    return all(isinstance(f, str) and Path(f).resolve().relative_to(folder).as_posix() in listed for f in files)


def _entry_release(entry: LedgerEntry, reference: IndexReference | None) -> Release:
    """One ledger entry's release, its files checked against the hashes the ledger recorded."""
    path = Path(entry.release_path)
    if not path.is_dir():
        raise DataSourceError(path, f"release of ledger entry {entry.seq} not found (moved or deleted?)")
    check_unchanged(path, entry.files)
    release = read_release(path, reference)
    prefix = f"release-{entry.seq}/"
    release.records = [replace(r, item_id=prefix + r.item_id, patient_id=prefix + r.patient_id) for r in release.records]
    return release


def cumulative_release(index_dir: str | Path, reference: IndexReference | None = None) -> tuple[Release, list[LedgerEntry]]:
    """The union of every release recorded in the ledger of ``index_dir`` (chain verified first)."""
    entries = verify_ledger(index_dir)
    if not entries:
        raise DataSourceError(index_dir, "the release ledger is empty: no release to audit cumulatively")
    parts = [_entry_release(entry, reference) for entry in entries]
    union = Release([p for part in parts for p in part.paths], [r for part in parts for r in part.records], [m for part in parts for m in part.manifests])
    return union, entries
