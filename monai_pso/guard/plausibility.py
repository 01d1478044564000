"""The guard's plausibility check: a draw farther from the real data than held-out real images are is ``implausible``.

The copy checks (:class:`~monai_pso.guard.checker.GuardCheck`) refuse draws too close to a training
image; alone they select for a generator's failures (blurred blobs, noise), which lie far from
everything. A :class:`PlausibilityCheck` holds a reference index of the training images in the
``fidelity`` embedding (:mod:`monai_pso.embed.fidelity`) and the radius calibrated for it
(:func:`~monai_pso.calibrate.plausibility.calibrate_plausibility`): a draw whose distance to its
``k``-th nearest training image exceeds the radius is refused as ``implausible`` (see ``docs/guard.md``,
"Implausible draws").

In a guard folder it lives in ``GUARD_DIR/plausibility/`` (``index/`` and ``radius.json``), described by
the ``plausibility`` entry of ``guard.json`` (:func:`build_plausibility` writes both,
:func:`plausibility_of_entry` reads them back, checking fingerprints). When the held-out split has too
few images to calibrate the radius (:func:`~monai_pso.calibrate.plausibility.min_holdout_images`: 19
at the default 5%) the check is left out and the entry says so (``checked: false`` and the reason). A
guard folder without the entry (built with ``--no-plausibility``, or before this check existed) loads
without it.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> entry = build_plausibility("phantom:2d?patients=40&acquisitions=4&size=24", None, Path(tempfile.mkdtemp()), n_bootstrap=20, progress=False)
>>> entry["checked"], entry["index"], entry["radius_file"], entry["k"]
(True, 'plausibility/index', 'plausibility/radius.json', 5)
>>> build_plausibility("phantom:2d?patients=12&acquisitions=2&size=24", None, Path(tempfile.mkdtemp()), progress=False)["reason"]
'4 held-out images in split val: the plausibility radius needs at least 19 to refuse at most 5% of real images'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_pso.calibrate.plausibility import DEFAULT_K, MAX_REFUSED, calibrate_plausibility, kth_nearest_distances, min_holdout_images
from monai_pso.calibrate.radius import PlausibilityRadius
from monai_pso.embed.base import Embedder
from monai_pso.embed.registry import resolve_embedder
from monai_pso.errors import DataSourceError, IndexIntegrityError

#: Folder of the plausibility check inside a guard folder, and the embedder it measures in.
PLAUSIBILITY_DIR = "plausibility"
PLAUSIBILITY_EMBEDDER = "fidelity"


def open_index(index: Any, embedder: Embedder | None, embedder_dir: str | Path | None, what: str = "reference index") -> tuple[Any, Embedder]:
    """A check's index (loaded when a folder is given; refused when empty) and the embedder that built it."""
    if isinstance(index, (str, Path)):
        from monai_pso.index import ReferenceIndex

        index = ReferenceIndex.load(index)
    if index.n_rows == 0:
        raise IndexIntegrityError(f"{index.source}: the {what} is empty")
    return index, resolve_embedder(index, embedder, embedder_dir)


@dataclass(frozen=True)
class PlausibilityCheck:
    """A fidelity-embedding reference index and its calibrated radius. Build with :meth:`create`.

    Parameters
    ----------
    index
        The :class:`~monai_pso.index.ReferenceIndex` of the training images in the fidelity embedding.
    radius
        Its :class:`~monai_pso.calibrate.radius.PlausibilityRadius`.
    embedder
        The embedder that built ``index``.
    index_fingerprint, embedder_fingerprint
        Computed once by :meth:`create`.
    """

    index: Any
    radius: PlausibilityRadius
    embedder: Embedder
    index_fingerprint: str = field(default="", compare=False)
    embedder_fingerprint: str = field(default="", compare=False)

    @classmethod
    def create(cls, index: Any, radius: PlausibilityRadius | str | Path, embedder: Embedder | None = None, embedder_dir: str | Path | None = None) -> PlausibilityCheck:
        """A check from objects or paths (an index folder, a radius JSON file); mismatched pieces are refused.

        Raises
        ------
        IndexIntegrityError
            The index folder is missing, corrupted or empty.
        IntegrityError
            The radius file was edited after it was written.
        FingerprintMismatchError
            The embedder did not build the index, or the radius belongs to another embedder or index.
        """
        index, embedder = open_index(index, embedder, embedder_dir, "plausibility reference index")
        if isinstance(radius, PlausibilityRadius):
            radius.check_compatible(embedder=embedder, index=index)
        else:
            radius = PlausibilityRadius.load(radius, embedder=embedder, index=index)
        return cls(index, radius, embedder, index.fingerprint, embedder.fingerprint)

    def measure(self, batch: np.ndarray) -> np.ndarray:
        """Distances ``(B,)`` float64 of a checked batch to the ``k``-th nearest training image."""
        return kth_nearest_distances(self.index, self.embedder, batch, self.radius.k)

    def provenance(self) -> dict[str, Any]:
        """The radius, its calibration and the fingerprints (for summaries and manifests)."""
        radius = self.radius
        return {
            "radius": radius.value,
            "radius_interval": list(radius.interval),
            "k": radius.k,
            "max_refused": radius.max_refused,
            "refused_share": radius.refused_share,
            "refused_share_interval": list(radius.refused_share_interval),
            "n_holdout_images": radius.n_images,
            "embedder": self.embedder.name,
            "embedder_fingerprint": self.embedder_fingerprint,
            "index_fingerprint": self.index_fingerprint,
            "index_source": self.index.source,
            "radius_created": radius.created,
        }


def build_plausibility(
    training: Any,
    holdout: Any,
    out_dir: Path,
    split: str = "train",
    holdout_split: str = "val",
    progress: bool = True,
    k: int = DEFAULT_K,
    max_refused: float = MAX_REFUSED,
    n_bootstrap: int = 1000,
) -> dict[str, Any]:
    """Index ``training``'s ``split`` in the fidelity embedding, calibrate the radius on ``holdout_split``, save both.

    Writes ``out_dir/plausibility/index`` and ``out_dir/plausibility/radius.json`` and returns the
    ``plausibility`` entry of ``guard.json`` (paths relative to ``out_dir``). ``holdout`` defaults to ``training``.
    With fewer held-out images than :func:`~monai_pso.calibrate.plausibility.min_holdout_images` nothing
    is built and the entry is ``{"checked": False, "reason": ...}``.
    """
    from monai_pso.data import load_image, load_source
    from monai_pso.embed.registry import create_embedder
    from monai_pso.index import build_index

    training = load_source(training)
    holdout = training if holdout is None else load_source(holdout)
    first = training.split(split)
    if not len(first):
        raise DataSourceError(training.description, f"has no images in split {split!r} to build the plausibility check on")
    n_held = len(holdout.split(holdout_split))
    if n_held < min_holdout_images(max_refused):
        reason = f"{n_held} held-out images in split {holdout_split}: the plausibility radius needs at least {min_holdout_images(max_refused)} to refuse at most {max_refused:.0%} of real images"
        return {"checked": False, "reason": reason}
    embedder = create_embedder(PLAUSIBILITY_EMBEDDER, spatial_dims=load_image(first.records[0]).ndim - 1)
    index = build_index(training, embedder, split=split, progress=progress)
    radius = calibrate_plausibility(index, embedder, holdout, split=holdout_split, k=k, max_refused=max_refused, n_bootstrap=n_bootstrap, progress=progress)
    folder = out_dir / PLAUSIBILITY_DIR
    index.save(folder / "index")
    radius.save(folder / "radius.json")
    return {
        "checked": True,
        "index": f"{PLAUSIBILITY_DIR}/index",
        "radius_file": f"{PLAUSIBILITY_DIR}/radius.json",
        "embedder": embedder.name,
        "embedder_dir": None,
        "embedder_fingerprint": embedder.fingerprint,
        "index_fingerprint": index.fingerprint,
        "radius": radius.value,
        "k": radius.k,
        "refused_share": radius.refused_share,
    }


def plausibility_of_entry(entry: dict[str, Any] | None, guard_dir: Path, guard_file: Path) -> PlausibilityCheck | None:
    """The check the ``plausibility`` entry of ``guard_file`` describes (``None`` when absent or left out); refused when its index or embedder changed."""
    if entry is None or not entry.get("checked"):
        return None
    embedder_dir = None if entry.get("embedder_dir") is None else guard_dir / entry["embedder_dir"]
    check = PlausibilityCheck.create(guard_dir / entry["index"], guard_dir / entry["radius_file"], embedder_dir=embedder_dir)
    if check.embedder_fingerprint != entry["embedder_fingerprint"] or check.index_fingerprint != entry["index_fingerprint"]:
        raise DataSourceError(guard_file, "plausibility check: its index or embedder changed since the guard was built; build it again")
    return check
