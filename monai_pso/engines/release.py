"""Writing a release: the images that passed the guard, then ``manifest.json``, all moved into place at once.

Images are written into a hidden temporary folder beside the output folder while the engine runs;
when the engine completes, the manifest is written and the folder renamed to the output folder, so
the output folder never holds a half-written release, and never an image the guard rejected (the
writer only sees what the guard left in ``engine.state.output``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from monai_pso.engines.writers import FORMATS, write_image
from monai_pso.errors import MonaiPsoError

#: Request fields copied into the manifest for each released image.
ITEM_FIELDS = ("item_id", "seed", "guidance_scale", "attempt", "source_item", "condition")


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a request field (tensors and arrays become lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class ReleaseWriter:
    """Ignite handler writing every image left in ``engine.state.output`` and, on completion, the manifest.

    Parameters
    ----------
    output_dir
        The release folder (must not exist, or be empty).
    fmt
        ``"png"`` (2D), ``"nifti"`` or ``"dicom"``.
    manifest
        Extra manifest fields (checkpoint hashes, threshold, index fingerprint, seed).
    spacing, modality
        Written into NIfTI / DICOM headers.
    staging_dir
        Where the release is assembled (default: a hidden folder beside ``output_dir``); other
        handlers (the guard's audit log) may write into it too.

    Examples
    --------
    >>> import tempfile, torch
    >>> out = Path(tempfile.mkdtemp()) / "release"
    >>> writer = ReleaseWriter(out, "png")
    >>> engine = Engine(lambda e, b: [{"item_id": "a", "seed": 0, "pred": torch.zeros(1, 4, 4)}])
    >>> writer.attach(engine); _ = engine.run([0])
    >>> sorted(p.name for p in out.iterdir())
    ['a.png', 'manifest.json']
    """

    def __init__(
        self,
        output_dir: str | Path,
        fmt: str = "png",
        manifest: dict[str, Any] | None = None,
        spacing: tuple[float, ...] | None = None,
        modality: str = "other",
        staging_dir: str | Path | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise MonaiPsoError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
        self.output_dir = Path(output_dir).expanduser().resolve()
        if self.output_dir.exists() and any(self.output_dir.iterdir()):
            raise MonaiPsoError(f"{self.output_dir}: output folder exists and is not empty")
        self.fmt = fmt
        self.manifest = dict(manifest or {})
        self.spacing = spacing
        self.modality = modality
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)
        self.staging_dir = Path(staging_dir) if staging_dir else Path(tempfile.mkdtemp(prefix=f".{self.output_dir.name}.", dir=self.output_dir.parent))
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.items: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_output)
        engine.add_event_handler(Events.COMPLETED, self.finish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.discard)

    def write_output(self, engine: Engine) -> None:
        """Write the images the guard released in this iteration."""
        for item in engine.state.output or []:
            files = write_image(item[Keys.PRED], self.staging_dir / str(item["item_id"]), self.fmt, self.spacing, self.modality, certificate=item.get("certificate"))
            entry = {key: _plain(item[key]) for key in ITEM_FIELDS if key in item}
            entry["files"] = [f.name for f in files]
            self.items.append(entry)

    def finish(self, engine: Engine) -> None:
        """Write ``manifest.json`` and move the staged release to ``output_dir``."""
        manifest = dict(self.manifest, format=self.fmt, n_released=len(self.items), items=self.items)
        (self.staging_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        if self.output_dir.exists():
            self.output_dir.rmdir()  # empty, checked at construction
        os.replace(self.staging_dir, self.output_dir)

    def discard(self, engine: Engine, error: BaseException) -> None:
        """On failure, remove the staged files (nothing reaches ``output_dir``) and re-raise."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        raise error


def release_manifest(
    checkpoints: dict[str, str | Path], seed: int, threshold_path: str | Path | None = None, index_fingerprint: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The provenance part of ``manifest.json``: checkpoint sha256s, threshold, index fingerprint, seed.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "m.pt"; _ = path.write_bytes(b"x")
    >>> release_manifest({"diffusion": path}, seed=3)["checkpoints"]["diffusion"]["sha256"][:8]
    '2d711642'
    """
    from monai_pso.calibrate.files import sha256_file

    manifest: dict[str, Any] = {
        "seed": int(seed),
        "checkpoints": {name: {"path": str(path), "sha256": sha256_file(path)} for name, path in checkpoints.items()},
        "index_fingerprint": index_fingerprint,
    }
    if threshold_path is not None:
        manifest["threshold"] = {"path": str(threshold_path), "sha256": sha256_file(threshold_path), **json.loads(Path(threshold_path).read_text())}
    manifest.update(extra)
    return manifest
