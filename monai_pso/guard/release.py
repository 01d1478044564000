"""``monai-pso gate``: copy the candidate images that pass the guard into a release folder, with their audit.

Any SOURCE can be gated (every split), so images from any generator can be released the same way.
Each image is first turned into the values its file will hold (:func:`~monai_pso.guard.storage.as_stored`),
then checked; the certificate is about the written file.

Release folder layout (documented in ``docs/guard.md``; read by ``monai_pso.audit``)::

    RELEASE_DIR/
      images/<item>.png | .nii.gz | .dcm (2D DICOM) | <item>/NNNN.dcm (3D DICOM)   passing images only
      audit.csv        one row per candidate: item, split, nn_distance, threshold, released,
                       nearest_patient_hash, check, file, time
      summary.json     counts, release share, per-check distance statistics and histograms
      distances.png    histograms of the distances with tau marked
      manifest.json    format, created, package version, release id, image format, candidates source,
                       threshold / index_fingerprint / embedder_fingerprint (of the first check),
                       checks (per check: tau, rule, query views, embedder and index fingerprints),
                       counts, files (path, item, sha256)

Everything is written into a hidden folder beside ``RELEASE_DIR`` and renamed into place at the end, so
a failure (a NaN image, a wrong shape, an empty index, a threshold for another embedder, a write error)
leaves no release at all. The salt of the patient hashes is stored only in a private file outside the
release (default ``RELEASE_DIR.salt``, owner-only permissions).

Examples
--------
>>> checker = PrivacyChecker.create(["idx-pixel", "idx-tiles"], ["tau-pixel.json", "tau-tiles.json"])  # doctest: +SKIP
>>> report = gate_source("generated/", checker, "release/", fmt="png")  # doctest: +SKIP
>>> report.counts["released"], report.counts["candidates"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from monai_pso import __version__
from monai_pso.calibrate.distances import record_batches
from monai_pso.io import write_json_atomically
from monai_pso.index.storage import sha256_file
from monai_pso.data import DataSource, ImageRecord, load_source
from monai_pso.errors import DataSourceError, ImageValueError, MonaiPsoError
from monai_pso.guard.audit_log import AuditLog
from monai_pso.guard.checker import PrivacyChecker
from monai_pso.guard.report import distance_statistics, plot_distances
from monai_pso.guard.storage import FORMATS, as_stored

#: Columns of ``RELEASE_DIR/audit.csv``.
RELEASE_AUDIT_COLUMNS = ("item", "split", "nn_distance", "threshold", "released", "nearest_patient_hash", "check", "file", "time")

#: Suffixes stripped from item ids before the format's own suffix is added.
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm", ".npy")

RELEASE_FORMAT = "monai-pso/release/1"


@dataclass
class ReleaseReport:
    """What :func:`gate_source` did: where, how many, and the summary it wrote."""

    release_dir: Path
    counts: dict[str, int]
    summary: dict[str, Any]


def release_name(item_id: str) -> str:
    """A safe relative file stem for an item id: path segments kept, odd characters replaced.

    Examples
    --------
    >>> release_name("sub/../a b.nii.gz"), release_name("breastmnist-test-00001")
    ('sub/a_b', 'breastmnist-test-00001')
    """
    stem = str(item_id)
    for suffix in _IMAGE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in re.split(r"[\\/]+", stem) if p not in ("", ".", "..")]
    if not parts:
        raise DataSourceError(item_id, "item id gives no usable file name")
    return "/".join(parts)


def _check_formats(source: DataSource, fmt: str) -> None:
    if fmt not in FORMATS:
        raise MonaiPsoError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    names = [release_name(r.item_id) for r in source]
    if len(set(names)) != len(names):
        raise DataSourceError(source.description, "two items map to the same release file name")
    if fmt == "dicom":
        from monai_pso.data.dicom_iod import modality_profile

        for modality in {r.modality for r in source}:
            modality_profile(modality)  # raises DicomWriteError for modalities without a DICOM IOD


def _write(record: ImageRecord, image: np.ndarray, staging: Path, fmt: str, certificate: dict[str, Any]) -> list[Path]:
    from monai_pso.engines.writers import write_image

    if fmt == "png" and image.ndim != 3:
        raise ImageValueError(f"{record.item_id}: PNG holds 2D images only, this one is {image.ndim - 1}D (use --format nifti)")
    stem = staging / "images" / release_name(record.item_id)
    stem.parent.mkdir(parents=True, exist_ok=True)
    return write_image(image, stem, fmt, record.spacing, record.modality, certificate=certificate)


def _prepare(release_dir: Path) -> Path:
    """Refuse a non-empty release folder; return a fresh hidden staging folder beside it."""
    if release_dir.exists() and (not release_dir.is_dir() or any(release_dir.iterdir())):
        raise DataSourceError(release_dir, "release folder exists and is not empty; choose a new one")
    release_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{release_dir.name}.", suffix=".partial", dir=release_dir.parent))


def gate_source(
    candidates: str | DataSource,
    checker: PrivacyChecker,
    release_dir: str | Path,
    fmt: str = "png",
    batch_size: int = 64,
    progress: bool = True,
) -> ReleaseReport:
    """Gate every image of ``candidates`` and write the passing ones into ``release_dir`` (see the module docstring).

    Parameters
    ----------
    candidates
        SOURCE string or data source of candidate (synthetic) images; all splits are gated.
    checker
        The guard; its hasher's salt should be private to this release.
    release_dir
        The new release folder (must not exist, or be empty).
    fmt
        ``png`` (2D), ``nifti`` (2D/3D) or ``dicom`` (modalities ct, mri, pet, xray).
    batch_size, progress
        Images per check; a progress bar.

    Raises
    ------
    MonaiPsoError
        On any bad input; nothing is released then.
    """
    source = load_source(candidates)
    release_dir = Path(release_dir).expanduser().resolve()
    _check_formats(source, fmt)
    staging = _prepare(release_dir)
    release_id = uuid.uuid4().hex
    try:
        report = _gate_into(source, checker, staging, fmt, release_id, batch_size, progress)
        if release_dir.exists():
            release_dir.rmdir()
        os.rename(staging, release_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.release_dir = release_dir
    return report


def _gate_into(source: DataSource, checker: PrivacyChecker, staging: Path, fmt: str, release_id: str, batch_size: int, progress: bool) -> ReleaseReport:
    files: list[dict[str, Any]] = []
    distances: dict[str, list[np.ndarray]] = {c.name: [] for c in checker.checks}
    counts = {"candidates": 0, "released": 0, "rejected": 0}
    with AuditLog(staging / "audit.csv", RELEASE_AUDIT_COLUMNS) as log, tqdm(total=len(source), desc="Gating", unit="img", disable=not progress) as bar:
        for records, images in record_batches(source.records, batch_size):
            stored = np.stack([as_stored(image, fmt, r.modality) for r, image in zip(records, images)])
            try:
                decisions = checker.decide(stored)
            except ImageValueError as error:
                raise ImageValueError(f"{records[0].item_id} (and {len(records) - 1} more in its batch): {error}") from None
            for name, values in decisions.distances.items():
                distances[name].append(values)
            for i, record in enumerate(records):
                row = decisions.row(i)
                written: list[Path] = []
                if row["released"]:
                    certificate = {"tau": row["threshold"], "nn_distance": row["nn_distance"], "release_id": release_id, **_fingerprints(checker, row["check"])}
                    written = _write(record, stored[i], staging, fmt, certificate)
                    files.extend({"path": str(p.relative_to(staging)), "item": record.item_id, "sha256": sha256_file(p)} for p in written)
                file_column = "" if not written else str((written[0] if len(written) == 1 else written[0].parent).relative_to(staging))
                log.write(item=record.item_id, split=record.split, file=file_column, **row)
                counts["released" if row["released"] else "rejected"] += 1
            counts["candidates"] += len(records)
            bar.update(len(records))
    joined = {name: np.concatenate(parts) for name, parts in distances.items()}
    summary = _summary(source, checker, counts, joined, release_id)
    write_json_atomically(staging / "summary.json", summary)
    panels = {c.name: (joined[c.name], joined[c.name] >= c.tau, c.tau) for c in checker.checks}
    plot_distances(staging / "distances.png", panels, f"{counts['released']} of {counts['candidates']} candidates released")
    write_json_atomically(staging / "manifest.json", _manifest(source, checker, counts, files, release_id, fmt))
    return ReleaseReport(staging, counts, summary)


def _fingerprints(checker: PrivacyChecker, name: str) -> dict[str, str]:
    check = next(c for c in checker.checks if c.name == name)
    return {"index_fingerprint": check.index_fingerprint, "embedder_fingerprint": check.embedder.fingerprint}


def _summary(source: DataSource, checker: PrivacyChecker, counts: dict[str, int], distances: dict[str, np.ndarray], release_id: str) -> dict[str, Any]:
    return {
        "release_id": release_id,
        "candidates": source.description,
        "counts": counts,
        "released_share": counts["released"] / counts["candidates"] if counts["candidates"] else 0.0,
        "thresholds": checker.taus,
        "distances": {c.name: distance_statistics(distances[c.name], c.tau) for c in checker.checks},
        "decision": "an image is released only when, for every check, nn_distance >= threshold",
    }


def _manifest(source: DataSource, checker: PrivacyChecker, counts: dict[str, int], files: list[dict[str, Any]], release_id: str, fmt: str) -> dict[str, Any]:
    first = checker.checks[0]
    return {
        "format": RELEASE_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "release_id": release_id,
        "image_format": fmt,
        "candidates": source.description,
        "threshold": first.tau,
        "index_fingerprint": first.index_fingerprint,
        "embedder_fingerprint": first.embedder.fingerprint,
        "checks": checker.provenance(),
        "counts": counts,
        "files": files,
    }
