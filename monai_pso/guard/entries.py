"""One check's entry in ``guard.json``: where its pieces lie, their fingerprints, its tau and how it was calibrated.

Examples
--------
>>> from monai_pso.calibrate import calibrate_threshold
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> from monai_pso.index import build_index
>>> src = "phantom:2d?patients=12&acquisitions=2&size=16"
>>> index = build_index(src, PixelEmbedder(), progress=False)
>>> entry = check_entry("pixel", PixelEmbedder(), index,
...                     calibrate_threshold(index, None, src, n_bootstrap=20, progress=False))
>>> entry["index"], entry["embedder_dir"], entry["tau"] > 0
('pixel/index', None, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_check(
    name: str,
    embedder: Any,
    training: Any,
    out_dir: Path,
    split: str,
    holdout: Any,
    holdout_split: str,
    progress: bool,
    keep_ledger: bool = False,
    **calibration: Any,
) -> dict[str, Any]:
    """Index ``training``'s ``split`` with ``embedder``, calibrate tau on ``holdout``'s ``holdout_split``, save both to ``out_dir/name/``; the entry."""
    from monai_pso.calibrate import calibrate_threshold
    from monai_pso.index import build_index

    index = build_index(training, embedder, split=split, progress=progress)
    threshold = calibrate_threshold(index, embedder, holdout, split=holdout_split, training=training, training_split=split, progress=progress, **calibration)
    index.save(Path(out_dir) / name / "index", keep_ledger=keep_ledger)
    threshold.save(Path(out_dir) / name / "threshold.json")
    return check_entry(name, embedder, index, threshold)


def check_entry(name: str, embedder: Any, index: Any, threshold: Any, embedder_dir: str | None = None) -> dict[str, Any]:
    """The ``guard.json`` entry of check ``name`` (its files under ``name/``; ``embedder_dir`` relative to the guard folder)."""
    verification = threshold.verification
    return {
        "name": name,
        "index": f"{name}/index",
        "threshold": f"{name}/threshold.json",
        "embedder": embedder.name,
        "embedder_dir": embedder_dir,
        "embedder_fingerprint": embedder.fingerprint,
        "index_fingerprint": index.fingerprint,
        "tau": threshold.value,
        "same_auc": None if verification is None else verification.value,
        "same_auc_interval": None if verification is None else list(verification.interval),
        "same_applied": threshold.same_applied,
        "utility_cost": threshold.to_dict()["utility_cost"],  # None when not measured
        "utility_cost_accepted": threshold.utility_cost_accepted,
    }
