"""Writing a guarded release: the images the guard certified, then ``manifest.json``, all moved into place at once.

Images are written into a hidden staging folder beside the output folder while the engine runs (the
guard writes ``audit.csv``, ``summary.json`` and ``distances.png`` there too); when the engine completes,
the manifest is written, the folder renamed to the output folder and the release appended to the ledger
of the guard's primary index. So the output folder never holds a half-written release, and never an
image the guard rejected: the writer only sees what the guard left in ``engine.state.output``, and
refuses any item the guard did not certify.

Release folder (the layout of ``monai-pso gate``, read by ``monai-pso audit``)::

    RELEASE_DIR/
      images/<item>.png | .nii.gz | .dcm | <item>/NNNN.dcm   released images only
      audit.csv       one row per check of every draw (the guard's log: released, rejected, dropped)
      summary.json    the guard's summary: counts, rejection rate, tau and distance statistics per check
      distances.png   histograms of the distances, tau marked
      manifest.json   format, created, package_version, release_id, image_format, command, threshold /
                      index_fingerprint / embedder_fingerprint (primary check), checks, counts,
                      provenance (checkpoints, seed...), n_released, files [{path, item, sha256}],
                      items [{item_id, seed, guidance_scale, attempt, source_item, condition, files,
                      nn_distance, tau}]
    RELEASE_DIR.salt  (beside the release, owner-only) the salt of the nearest-patient hashes
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from monai_pso import __version__
from monai_pso.engines.writers import FORMATS, write_image
from monai_pso.errors import MonaiPsoError
from monai_pso.io import sha256_file, write_json_atomically

#: Request fields copied into the manifest for each released image.
ITEM_FIELDS = ("item_id", "seed", "guidance_scale", "attempt", "source_item", "condition")


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a request field (tensors and arrays become lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def guard_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """Manifest fields from the guard's summary: release id, the primary check's tau and fingerprints, every check, counts.

    Examples
    --------
    >>> summary = {"release_id": "r", "counts": {"released": 1},
    ...            "checks": {"pixel": {"tau": 0.05, "index_fingerprint": "i", "embedder_fingerprint": "e"}}}
    >>> fields = guard_fields(summary); fields["threshold"], fields["index_fingerprint"]
    (0.05, 'i')
    """
    primary = next(iter(summary["checks"].values()))
    return {
        "release_id": summary["release_id"],
        "threshold": primary["tau"],
        "index_fingerprint": primary["index_fingerprint"],
        "embedder_fingerprint": primary["embedder_fingerprint"],
        "checks": summary["checks"],
        "counts": summary["counts"],
    }


class ReleaseWriter:
    """Ignite handler writing the certified images of ``engine.state.output`` and, on completion, the release.

    Attach it after the privacy guard (:func:`monai_pso.engines.privacy_guard`), whose ``save_dir``
    must be :attr:`staging_dir`.

    Parameters
    ----------
    output_dir
        The release folder (must not exist, or be empty).
    fmt
        ``"png"`` (2D), ``"nifti"`` or ``"dicom"``.
    manifest
        Provenance fields of the manifest (:func:`release_manifest`: checkpoint hashes, seed...).
    spacing, modality
        Written into NIfTI / DICOM headers.
    ledger_dir
        The guard's primary index folder: the release is appended to its ledger
        (:func:`monai_pso.audit.ledger.append_release`); ``None``: not recorded.
    command
        Recorded in the ledger and the manifest.
    require_guard
        Refuse items the guard did not certify, and a run without a guard summary (fail closed).

    Attributes
    ----------
    staging_dir
        The hidden folder the release is assembled in (created when the engine starts).
    salt_file
        ``RELEASE_DIR.salt``: where the guard should keep the salt of its patient hashes.

    Examples
    --------
    >>> import tempfile, torch
    >>> out = Path(tempfile.mkdtemp()) / "release"
    >>> writer = ReleaseWriter(out, "png", require_guard=False)
    >>> engine = Engine(lambda e, b: [{"item_id": "a", "seed": 0, "pred": torch.zeros(1, 4, 4)}])
    >>> writer.attach(engine); _ = engine.run([0])
    >>> sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    ['images', 'images/a.png', 'manifest.json']
    """

    def __init__(
        self,
        output_dir: str | Path,
        fmt: str = "png",
        manifest: dict[str, Any] | None = None,
        spacing: tuple[float, ...] | None = None,
        modality: str = "other",
        ledger_dir: str | Path | None = None,
        command: str = "generate",
        require_guard: bool = True,
    ) -> None:
        if fmt not in FORMATS:
            raise MonaiPsoError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
        self.output_dir = Path(output_dir).expanduser().resolve()
        if self.output_dir.exists() and (not self.output_dir.is_dir() or any(self.output_dir.iterdir())):
            raise MonaiPsoError(f"{self.output_dir}: output folder exists and is not empty")
        self.fmt = fmt
        self.manifest = dict(manifest or {})
        self.spacing = spacing
        self.modality = modality
        self.ledger_dir = Path(ledger_dir) if ledger_dir is not None else None
        self.command = command
        self.require_guard = require_guard
        self.staging_dir = self.output_dir.parent / f".{self.output_dir.name}.{uuid.uuid4().hex[:8]}.partial"
        self.salt_file = self.output_dir.with_name(self.output_dir.name + ".salt")
        self._new_salt = not self.salt_file.exists()
        self.items: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_output)
        engine.add_event_handler(Events.COMPLETED, self.finish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.discard)

    def start(self, engine: Engine) -> None:
        """Check the ledger before any image is drawn (a broken ledger stops the run, not the record)."""
        self.items, self.files = [], []
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        if self.ledger_dir is not None:
            check_ledger(self.ledger_dir)

    def write_output(self, engine: Engine) -> None:
        """Write the images the guard released in this iteration."""
        from monai_pso.guard.release import release_name

        for item in engine.state.output or []:
            if self.require_guard and item.get("privacy_released") is not True:
                raise MonaiPsoError(f"{item.get('item_id')}: not certified by the privacy guard (attach the guard before the release writer)")
            stem = self.staging_dir / "images" / release_name(str(item["item_id"]))
            stem.parent.mkdir(parents=True, exist_ok=True)
            written = write_image(item[Keys.PRED], stem, self.fmt, self.spacing, self.modality, certificate=item.get("certificate"))
            paths = [p.relative_to(self.staging_dir).as_posix() for p in written]
            self.files.extend({"path": path, "item": item["item_id"], "sha256": sha256_file(self.staging_dir / path)} for path in paths)
            entry = {key: _plain(item[key]) for key in ITEM_FIELDS if key in item}
            entry["files"] = paths
            if "privacy_nn_distance" in item:
                entry.update(nn_distance=float(item["privacy_nn_distance"]), tau=float(item["privacy_threshold"]), check=item["privacy_check"])
            self.items.append(entry)

    def build_manifest(self, engine: Engine) -> dict[str, Any]:
        """The manifest of the run: format, provenance, the guard's checks and counts, the released files."""
        from monai_pso.guard.release import RELEASE_FORMAT  # the format ``monai-pso gate`` writes

        summary = getattr(engine.state, "privacy_summary", None)
        if summary is None and self.require_guard:
            raise MonaiPsoError("no privacy guard ran before the release writer: nothing is released")
        return {
            "format": RELEASE_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "image_format": self.fmt,
            "command": self.command,
            **self.manifest,
            **(guard_fields(summary) if summary is not None else {}),
            "n_released": len(self.items),
            "files": self.files,
            "items": self.items,
        }

    def finish(self, engine: Engine) -> None:
        """Write ``manifest.json``, move the staged release to ``output_dir`` and record it in the ledger."""
        manifest = self.build_manifest(engine)
        write_json_atomically(self.staging_dir / "manifest.json", manifest)
        if self.output_dir.exists():
            self.output_dir.rmdir()  # empty, checked at construction
        os.replace(self.staging_dir, self.output_dir)
        if self.ledger_dir is not None:
            record_release(self.ledger_dir, self.output_dir, self.command, manifest.get("index_fingerprint"))

    def discard(self, engine: Engine, error: BaseException) -> None:
        """On failure, remove the staged files and a salt file made for this run (nothing is released), re-raise."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        if self._new_salt and not self.output_dir.exists():
            self.salt_file.unlink(missing_ok=True)
        raise error


def check_ledger(index_dir: str | Path) -> None:
    """Raise unless ``index_dir`` is a folder whose release ledger verifies: checked before a release is made.

    Examples
    --------
    >>> check_ledger("no/such/index")
    Traceback (most recent call last):
    ...
    monai_pso.errors.MonaiPsoError: no/such/index: index folder of the release ledger not found
    """
    from monai_pso.audit.ledger import verify_ledger

    if not Path(index_dir).is_dir():
        raise MonaiPsoError(f"{index_dir}: index folder of the release ledger not found")
    verify_ledger(index_dir)


def record_release(index_dir: str | Path, release_dir: str | Path, command: str, index_fingerprint: str | None) -> Any:
    """Append a finished release to the ledger of ``index_dir``; if that fails, remove the release and re-raise.

    So no release exists outside the ledger. Returns the new :class:`~monai_pso.audit.ledger.LedgerEntry`.

    Examples
    --------
    >>> record_release("runs/index", "runs/release", "gate", checker.checks[0].index_fingerprint)  # doctest: +SKIP
    """
    from monai_pso.audit.ledger import append_release

    try:
        return append_release(index_dir, release_dir, command=command, index_fingerprint=index_fingerprint)
    except BaseException:
        shutil.rmtree(release_dir, ignore_errors=True)
        raise


def release_manifest(checkpoints: dict[str, str | Path], seed: int, **extra: Any) -> dict[str, Any]:
    """The provenance part of ``manifest.json``: checkpoint paths and sha256s, the seed, and ``extra`` fields.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "m.pt"; _ = path.write_bytes(b"x")
    >>> release_manifest({"diffusion": path}, seed=3)["checkpoints"]["diffusion"]["sha256"][:8]
    '2d711642'
    """
    return {
        "seed": int(seed),
        "checkpoints": {name: {"path": str(path), "sha256": sha256_file(Path(path))} for name, path in checkpoints.items()},
        **extra,
    }
