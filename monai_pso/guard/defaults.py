"""The recommended default guard: two pixel checks, each with its own index and calibrated tau.

- ``pixel`` (whole image, query views: 1 pixel translations, turns of 2.5 and 5 degrees in 2D): catches
  copies, mirror images, turned, re-exposed (intensity scale and offset) and noisy copies;
- ``pixel-tiles`` (3 x 3 overlapping tiles plus the whole image at tile size, query views: translations
  of up to 2 pixels): catches a copied region pasted into another image and shifted copies.

Why two: one tau cannot serve both. Measured on PneumoniaMNIST (subset), the whole-image check puts a
5 degree turn of a training image at most 0.027 from it against tau 0.037, but a pasted quarter of a
training image at 0.076; the tile check finds the pasted region at 0.006 against tau 0.012, but a turned
copy at up to 0.028 (any tile of some other chest X-ray matches that well). An image is released only
when it passes both.

Examples
--------
>>> checker = build_default_guard("phantom:2d?patients=12&acquisitions=3&size=32", out_dir="guard")  # doctest: +SKIP
>>> [c.name for c in checker.checks]  # doctest: +SKIP
['pixel', 'pixel-tiles']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai_pso.calibrate import calibrate_threshold
from monai_pso.data import DataSource, load_source
from monai_pso.embed.base import Embedder
from monai_pso.embed.registry import create_embedder
from monai_pso.guard.checker import GuardCheck, PrivacyChecker
from monai_pso.guard.hashing import PatientHasher


def default_embedders() -> dict[str, Embedder]:
    """The embedders of the default checks, by check name."""
    return {"pixel": create_embedder("pixel"), "pixel-tiles": create_embedder("pixel", tiles=3)}


def build_default_guard(
    training: str | DataSource,
    holdout: str | DataSource | None = None,
    split: str = "val",
    out_dir: str | Path | None = None,
    hasher: PatientHasher | None = None,
    progress: bool = True,
    keep_ledger: bool = False,
    **calibration: Any,
) -> PrivacyChecker:
    """Index the train split of ``training`` with each default embedder, calibrate tau on ``holdout``.

    Parameters
    ----------
    training
        SOURCE (or data source) whose ``train`` split the guard protects.
    holdout
        Held-out patients for calibration; default ``training`` itself (its ``split``).
    split
        Holdout split used for calibration.
    out_dir
        When given, each check is saved as ``out_dir/<name>/index`` and ``out_dir/<name>/threshold.json``
        (for ``monai-pso gate --index ... --threshold ...``).
    hasher
        Salt of the nearest-patient hashes.
    progress
        Progress bars.
    keep_ledger
        Replace saved indexes that hold a release ledger, carrying the ledger into the new index
        (:meth:`~monai_pso.index.ReferenceIndex.save`); without it such an index is not replaced.
    calibration
        More options of :func:`~monai_pso.calibrate.calibrate_threshold` (``rule``, ``n_bootstrap``...).
    """
    from monai_pso.index import build_index

    training = load_source(training)
    holdout = training if holdout is None else load_source(holdout)
    checks = []
    for name, embedder in default_embedders().items():
        index = build_index(training, embedder, split="train", progress=progress)
        threshold = calibrate_threshold(index, embedder, holdout, split=split, training=training, progress=progress, **calibration)
        if out_dir is not None:
            index.save(Path(out_dir) / name / "index", keep_ledger=keep_ledger)
            threshold.save(Path(out_dir) / name / "threshold.json")
        checks.append(GuardCheck.create(index, threshold, embedder, name=name))
    return PrivacyChecker(checks, hasher)
