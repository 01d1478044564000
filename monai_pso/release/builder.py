"""Writing a release: :class:`ReleaseBuilder` stages items one by one and publishes them all at once.

Every release (``monai-pso gate``, guarded generation, a bundle run) is written by a builder:

1. ``ReleaseBuilder(RELEASE_DIR, checker, fmt)`` refuses a non-empty ``RELEASE_DIR`` and a broken
   ledger, creates a hidden staging folder beside it and the private salt file ``RELEASE_DIR.salt``;
2. ``add(item, decision, image)`` records the guard's decision on one item and, when it was released,
   writes the image (with its certificate) into the staging folder and hashes the file, once;
3. ``finish()`` writes ``audit.csv``, ``summary.json``, ``distances.png`` and ``manifest.json``, appends
   the release to the ledger of the guard's primary index, and only then renames the staging folder to
   ``RELEASE_DIR``. If anything fails (the ledger append included) nothing is published: the staging
   folder and a salt file made for this release are removed. ``discard()`` does the same on an error.

Several ranks (``torchrun``, one process group) can write one release: each rank builds with the same
``RELEASE_DIR`` and adds the items it gated or generated; ``finish`` (or ``discard``) is collective,
rank 0 merges and publishes, and a failure on any rank publishes nothing on all.

The folder layout is :mod:`monai_pso.release.layout`; the audit columns are
:func:`monai_pso.guard.audit_log.audit_columns`.

Examples
--------
>>> import tempfile
>>> from monai_pso.guard import build_guard
>>> root = Path(tempfile.mkdtemp())
>>> checker = build_guard("phantom:2d?patients=12&acquisitions=2&size=24", root / "guard", n_bootstrap=20, progress=False)
>>> image = np.full((1, 1, 24, 24), 0.5, np.float32)
>>> with ReleaseBuilder(root / "release", checker, "png") as builder:
...     _ = builder.add("synthetic-0", builder.checker.decide(image).row(0), image[0])
...     report = builder.finish()
>>> report.counts["requested"], sorted(p.name for p in (root / "release").iterdir())
(1, ['audit.csv', 'distances.png', 'images', 'manifest.json', 'summary.json'])
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from monai_pso import __version__
from monai_pso.data.image_files import FORMATS, write_image
from monai_pso.errors import DataSourceError, ImageValueError, MonaiPsoError
from monai_pso.guard.audit_log import AuditLog, audit_columns, utc_now
from monai_pso.guard.checker import PrivacyChecker
from monai_pso.guard.hashing import PatientHasher
from monai_pso.io import sha256_file, write_json_atomically, write_text_atomically
from monai_pso.release import layout
from monai_pso.release.figures import distance_statistics, plot_distances
from monai_pso.release.ledger import append_entry, verify_ledger
from monai_pso.release.ranks import gather, rank_and_world, share

#: The rule every release applies, written into its summary.
DECISION_RULE = "an item is released only when, for every check, its distance to the nearest training image is >= that check's tau"

#: Added to the rule when the guard has a plausibility check.
PLAUSIBILITY_RULE = ", and its distance to its k-th nearest training image in the fidelity embedding is <= the plausibility radius"


@dataclass
class ReleaseReport:
    """What a finished release holds: where, its counts and summary, and its ledger entry number."""

    release_dir: Path
    counts: dict[str, int]
    summary: dict[str, Any]
    ledger_seq: int | None


def _csv_cell(value: str) -> str:
    """``value`` quoted for CSV when it needs to be."""
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a request field (tensors and arrays become lists or numbers)."""
    return value.tolist() if hasattr(value, "tolist") else value


def count_items(rows: list[Mapping[str, Any]]) -> dict[str, int]:
    """The release counts (:data:`~monai_pso.release.layout.COUNT_KEYS`) of audit rows.

    Examples
    --------
    >>> count_items([{"released": True, "outcome": "released", "draws": 1}, {"released": False, "outcome": "too_close", "draws": 3},
    ...              {"released": False, "outcome": "implausible", "draws": 2}])
    {'requested': 3, 'released': 1, 'too_close': 1, 'implausible': 1, 'dropped': 2, 'draws': 6}
    """
    released = sum(bool(r["released"]) for r in rows)
    return {
        "requested": len(rows),
        "released": released,
        "too_close": sum(r["outcome"] == "too_close" for r in rows),
        "implausible": sum(r["outcome"] == "implausible" for r in rows),
        "dropped": len(rows) - released,
        "draws": sum(int(r["draws"]) for r in rows),
    }


def merge_generation(summaries: list[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The ranks' generation summaries as one: counts and dropped ids summed, rates recomputed, any alarm raised.

    Examples
    --------
    >>> part = {"counts": {"generated": 2, "checks": 4, "rejected": 2, "first_attempt_rejected": 1}, "dropped": ["a"], "alarm": {"raised": False}}
    >>> merged = merge_generation([part, dict(part, dropped=["b"])])
    >>> merged["counts"]["checks"], merged["rejection_rate"], merged["dropped"]
    (8, 0.5, ['a', 'b'])
    """
    present = [dict(s) for s in summaries if s is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    merged = dict(present[0])
    merged["counts"] = {key: sum(s["counts"][key] for s in present) for key in present[0]["counts"]}
    merged["dropped"] = [item for s in present for item in s["dropped"]]
    merged["alarm"] = dict(present[0]["alarm"], raised=any(s["alarm"]["raised"] for s in present))
    counts = merged["counts"]
    merged["rejection_rate"] = counts["rejected"] / counts["checks"] if counts["checks"] else 0.0
    merged["first_attempt_rejection_rate"] = counts["first_attempt_rejected"] / counts["generated"] if counts["generated"] else 0.0
    for outcome in ("too_close", "implausible"):
        merged[f"{outcome}_rate"] = counts.get(outcome, 0) / counts["checks"] if counts["checks"] else 0.0
    return merged


class ReleaseBuilder:
    """Stage a release item by item and publish it atomically, with its ledger entry (see the module docstring).

    Parameters
    ----------
    release_dir
        The release folder to create (must not exist, or be empty).
    checker
        The guard that decided (its checks' provenance goes into the summary and manifest; its ledger
        folder receives the entry). The builder's :attr:`checker` is the same guard with the salt of
        this release: decide with it.
    fmt
        ``png`` (2D), ``nifti`` (2D/3D) or ``dicom``.
    command, source
        What made the release and from what (recorded in the summary, manifest and ledger).
    modality, spacing
        Written into NIfTI / DICOM headers.
    provenance
        More manifest fields (checkpoint hashes, seed...).
    record
        Append the release to the ledger of ``checker.ledger_dir`` (always, when it has one, unless false).
    disclose_ids
        Keep the items' own ids in the release (and the generator's ``source_item`` and conditioning
        vectors in the manifest) instead of opaque ids. They may name, or be pixels of, a training image:
        only for releases that stay with the data owner.
    """

    def __init__(
        self,
        release_dir: str | Path,
        checker: PrivacyChecker,
        fmt: str = "png",
        *,
        command: str = "gate",
        source: str = "",
        modality: str = "other",
        spacing: tuple[float, ...] | None = None,
        provenance: Mapping[str, Any] | None = None,
        record: bool = True,
        disclose_ids: bool = False,
    ) -> None:
        if fmt not in FORMATS:
            raise MonaiPsoError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        self.release_dir = Path(release_dir).expanduser().resolve()
        self.fmt, self.command, self.source = fmt, command, source
        self.modality, self.spacing = modality, spacing
        self.provenance = dict(provenance or {})
        self.disclose_ids = disclose_ids
        self.ledger_dir = checker.ledger_dir if record else None
        self.rank, self.world = rank_and_world()
        self.salt_file = layout.salt_path(self.release_dir)
        prepared = self._prepare() if self.rank == 0 else None
        prepared = share(prepared)
        if "error" in prepared:
            raise MonaiPsoError(prepared["error"])
        self.staging = Path(prepared["staging"])
        self.release_id = prepared["release_id"]
        self._new_salt = prepared["new_salt"]
        self.checker = checker.with_hasher(PatientHasher.from_file(self.salt_file, create=False))
        self.rows: list[dict[str, Any]] = []
        self.files: list[dict[str, str]] = []
        self.items: list[dict[str, Any]] = []
        self._originals: dict[str, str] = {}  # released id -> the item's own id
        self._closed = False

    def _prepare(self) -> dict[str, Any]:
        """Rank 0: check the target and the ledger, make the staging folder and the salt file."""
        try:
            target = self.release_dir
            if target.exists() and (not target.is_dir() or any(target.iterdir())):
                raise DataSourceError(target, "release folder exists and is not empty; choose a new one")
            if self.ledger_dir is not None:
                if not self.ledger_dir.is_dir():
                    raise DataSourceError(self.ledger_dir, "folder of the release ledger not found")
                verify_ledger(self.ledger_dir)  # a broken ledger stops the release before anything is drawn
            target.parent.mkdir(parents=True, exist_ok=True)
            new_salt = not self.salt_file.exists()
            PatientHasher.from_file(self.salt_file)
            staging = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        except MonaiPsoError as error:
            return {"error": str(error)}
        return {"staging": staging, "release_id": uuid.uuid4().hex, "new_salt": new_salt}

    # -- adding ---------------------------------------------------------------------------------

    def released_id(self, item: str) -> str:
        """The id ``item`` has in this release: opaque (a salted hash), or its own with ``disclose_ids``."""
        if self.disclose_ids:
            return layout.release_name(item)
        return "r-" + self.checker.hasher(f"release-item:{item}")[:16]

    @property
    def draw_log(self) -> Path:
        """Where a generator logs every draw of this rank (merged into ``draws.csv`` by :meth:`finish`)."""
        return self.staging / (layout.DRAWS_FILE if self.world == 1 else f".draws-rank{self.rank}.csv")

    def add(
        self,
        item: str,
        decision: Mapping[str, Any],
        image: Any = None,
        *,
        draws: int = 1,
        split: str = "",
        details: Mapping[str, Any] | None = None,
        modality: str | None = None,
        spacing: tuple[float, ...] | None = None,
    ) -> list[str]:
        """Record the guard's ``decision`` (a :meth:`~monai_pso.guard.checker.Decisions.row`) on ``item``.

        A released item's ``image`` ``(1, *spatial)`` is written with its certificate (and ``modality``
        / ``spacing`` in its header, default the builder's); returns the written files (relative to the
        release), empty for a refused item. ``details`` (the generator's request: seed, condition...) go
        into the manifest's ``items``.
        """
        name = self.released_id(item)
        if name in self._originals:
            raise DataSourceError(item, "two items of the release have the same id (or map to the same file name)")
        self._originals[name] = item
        paths: list[str] = []
        if decision["released"]:
            if image is None:
                raise ImageValueError(f"{item}: released without an image to write")
            if self.fmt == "png" and np.ndim(image) != 3:
                raise ImageValueError(f"{item}: PNG holds 2D images only, this one is {np.ndim(image) - 1}D (use --format nifti)")
            stem = self.staging / layout.IMAGES_DIR / name
            stem.parent.mkdir(parents=True, exist_ok=True)
            certificate = self.checker.certificate(dict(decision), self.release_id)
            written = write_image(image, stem, self.fmt, spacing or self.spacing, modality or self.modality, certificate=certificate)
            paths = [p.relative_to(self.staging).as_posix() for p in written]
            self.files.extend({"path": path, "item": name, "sha256": sha256_file(self.staging / path)} for path in paths)
            self.items.append({"item": name, "files": paths, **{k: _plain(v) for k, v in (details or {}).items()}})
        file_column = "" if not paths else (paths[0] if len(paths) == 1 else str(Path(paths[0]).parent))
        self.rows.append({**decision, "item": name, "split": split, "draws": int(draws), "file": file_column, "time": utc_now()})
        return paths

    # -- finishing ------------------------------------------------------------------------------

    def finish(self, generation: Mapping[str, Any] | None = None) -> ReleaseReport:
        """Write the records, append the ledger entry, publish (collective across ranks; see the module docstring).

        ``generation``: the generator's own draw statistics (rejection rate, alarm...), kept in the summary.
        """
        if self._closed:
            raise MonaiPsoError(f"{self.release_dir}: this release was already finished or discarded")
        self._closed = True
        parts = gather({"ok": True, "rows": self.rows, "files": self.files, "items": self.items, "originals": self._originals, "generation": generation})
        outcome: dict[str, Any] = {}
        if self.rank == 0:
            failed = [rank for rank, part in enumerate(parts) if not part["ok"]]
            try:
                if failed:
                    raise MonaiPsoError(f"{self.release_dir}: rank {failed[0]} failed; nothing is released")
                generation = merge_generation([part["generation"] for part in parts])
                if generation is not None:
                    generation["dropped"] = [self.released_id(item) for item in generation["dropped"]]
                outcome = self._publish(parts, generation)
            except BaseException as error:
                self._remove()
                outcome = {"error": f"{type(error).__name__}: {error}"}
                share(outcome)
                raise
        outcome = share(outcome)
        if "error" in outcome:
            raise MonaiPsoError(f"{self.release_dir}: not released ({outcome['error']})")
        return ReleaseReport(self.release_dir, outcome["counts"], outcome["summary"], outcome["ledger_seq"])

    def discard(self) -> None:
        """Publish nothing and remove what was staged (collective across ranks, like :meth:`finish`)."""
        if self._closed:
            return
        self._closed = True
        gather({"ok": False})
        if self.rank == 0:
            self._remove()
        share({"error": "discarded"})

    def _remove(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if not self.release_dir.exists():
            layout.item_map_path(self.release_dir).unlink(missing_ok=True)
            if self._new_salt:
                self.salt_file.unlink(missing_ok=True)

    def __enter__(self) -> ReleaseBuilder:
        return self

    def __exit__(self, kind: type | None, *rest: object) -> None:
        if kind is not None:
            self.discard()

    def _publish(self, parts: list[dict[str, Any]], generation: Mapping[str, Any] | None) -> dict[str, Any]:
        rows = [row for part in parts for row in part["rows"]]
        originals = {name: item for part in parts for name, item in part["originals"].items()}
        if len(originals) != len(rows):
            raise DataSourceError(self.release_dir, "two ranks wrote items with the same id")
        files = [f for part in parts for f in part["files"]]
        items = [i for part in parts for i in part["items"]]
        self._merge_draw_logs()
        self._write_item_map(originals)
        counts = count_items(rows)
        with AuditLog(self.staging / layout.AUDIT_FILE, audit_columns(self.checker.names)) as log:
            for row in rows:
                log.write(**row)
        summary = self._summary(rows, counts, generation)
        write_json_atomically(self.staging / layout.SUMMARY_FILE, summary)
        panels = {}
        for name, tau in self.checker.taus.items():
            values = np.array([r[f"{name}_distance"] for r in rows], np.float64)
            panels[name] = (values, values >= tau, tau)
        plot_distances(self.staging / layout.DISTANCES_FILE, panels, f"{counts['released']} of {counts['requested']} items released")
        manifest = self._manifest(counts, files, items)
        write_json_atomically(self.staging / layout.MANIFEST_FILE, manifest)
        seq = self._record(manifest, files)
        if self.release_dir.exists():
            self.release_dir.rmdir()  # empty, checked when the builder was made
        self.staging.rename(self.release_dir)
        return {"counts": counts, "summary": summary, "ledger_seq": seq}

    def _merge_draw_logs(self) -> None:
        """Join the ranks' draw logs into ``draws.csv``, each item under its released id."""
        logs = sorted(self.staging.glob(".draws-rank*.csv"), key=lambda p: int(p.stem.removeprefix(".draws-rank")))
        single = self.staging / layout.DRAWS_FILE
        if not logs and single.is_file():
            logs = [single.rename(self.staging / ".draws-rank0.csv")]
        rows: list[dict[str, str]] = []
        header: list[str] | None = None
        for path in logs:
            with path.open(newline="") as part:
                reader = csv.DictReader(part)
                header = header or list(reader.fieldnames or [])
                rows.extend(dict(row, item=self.released_id(row["item"])) for row in reader)
            path.unlink()
        if header is not None:
            with single.open("w", newline="") as merged:
                writer = csv.DictWriter(merged, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)

    def _write_item_map(self, originals: dict[str, str]) -> None:
        """``RELEASE_DIR.items.csv`` beside the release (owner-only): released id -> the item's own id."""
        path = layout.item_map_path(self.release_dir)
        lines = ["released_item,item", *(f"{name},{_csv_cell(item)}" for name, item in originals.items())]
        write_text_atomically(path, "\n".join(lines) + "\n")
        path.chmod(0o600)

    def _header(self) -> dict[str, Any]:
        """The fields the summary and the manifest open with."""
        return {
            "format": layout.RELEASE_FORMAT,
            "release_id": self.release_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "command": self.command,
            "source": self.source,
        }

    def _summary(self, rows: list[dict[str, Any]], counts: dict[str, int], generation: Mapping[str, Any] | None) -> dict[str, Any]:
        taus = self.checker.taus
        return {
            **self._header(),
            "counts": counts,
            "released_share": counts["released"] / counts["requested"] if counts["requested"] else 0.0,
            "checks": self.checker.provenance(),
            "distances": {name: distance_statistics(np.array([r[f"{name}_distance"] for r in rows], np.float64), tau) for name, tau in taus.items()},
            "plausibility": self.checker.plausibility_provenance(),
            "identity": self.checker.identity,  # the guard's identity block: certified or not, and why
            "decision": DECISION_RULE + (PLAUSIBILITY_RULE if self.checker.plausibility is not None else ""),
            "generation": dict(generation) if generation is not None else None,
        }

    def _manifest(self, counts: dict[str, int], files: list[dict[str, str]], items: list[dict[str, Any]]) -> dict[str, Any]:
        primary = self.checker.checks[0]
        return {
            **self._header(),
            "image_format": self.fmt,
            "threshold": primary.tau,
            "index_fingerprint": primary.index_fingerprint,
            "embedder_fingerprint": primary.embedder_fingerprint,
            "checks": self.checker.provenance(),
            "plausibility": self.checker.plausibility_provenance(),
            "counts": counts,
            "provenance": self.provenance,
            "files": files,
            "items": items,
        }

    def _record(self, manifest: dict[str, Any], files: list[dict[str, str]]) -> int | None:
        """Append the ledger entry (before the release is visible); its file hashes are the ones taken at writing."""
        if self.ledger_dir is None:
            return None
        hashes = {f["path"]: f["sha256"] for f in files}
        for path in sorted(self.staging.iterdir()):
            if path.is_file() and path.name != layout.MANIFEST_FILE and not path.name.startswith("."):
                hashes[path.name] = sha256_file(path)  # the records just written
        entry = append_entry(
            self.ledger_dir,
            {
                "command": self.command,
                "release_path": str(self.release_dir),
                "files": dict(sorted(hashes.items())),
                "manifest_sha256": sha256_file(self.staging / layout.MANIFEST_FILE),
                "threshold": manifest["threshold"],
                "embedder_fingerprint": manifest["embedder_fingerprint"],
                "index_fingerprint": manifest["index_fingerprint"],
                "audit": {"counts": manifest["counts"], "plausibility_radius": (manifest["plausibility"] or {}).get("radius")},
            },
        )
        return entry.seq
