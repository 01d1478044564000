"""The guard's copy checks: equalised pixels with the query aligned over a grid of poses, searched exactly.

:func:`build_copy_checks` adds two checks to a guard folder, each an ordinary guard check (an exact 1:N
index of every training image's vectors and a tau), with the :class:`~monai_pso.embed.aligned.AlignedEmbedder`:

- ``copy``: the central 70% of each side, equalised; the query under a grid of moves, turns and zooms
  and mirrored. Catches moved, turned, zoomed, cropped, blurred, re-exposed (gamma, contrast), noisy,
  mirrored, mildly deformed and re-quantised copies;
- ``copy-regions``: windows of half the side (a quarter of a 2D image), each equalised, the query's on a
  grid twice as dense as the training images'. Catches a region of a training image pasted anywhere on
  another image.

tau is the ``holdout_percentile`` (default 5th) percentile of held-out patients' distances to the
nearest training image in that embedding (:func:`~monai_pso.calibrate.calibrate_threshold` with rule
``holdout``): a copy check asks "is this one of the training images?"; whether an image shows a training
*patient* is the identity check's question. The embedders have no weights: ``guard.json`` names their
fingerprints and each index manifest holds the settings they are rebuilt from.

Examples
--------
>>> import tempfile
>>> entries = build_copy_checks("phantom:2d?patients=8&acquisitions=2&size=16", Path(tempfile.mkdtemp()), n_bootstrap=20, progress=False)
>>> [e["name"] for e in entries], entries[0]["embedder"]
(['copy', 'copy-regions'], 'aligned')
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

#: The checks' names, by window mode of their embedder.
CHECK_NAMES = {False: "copy", True: "copy-regions"}


def build_copy_checks(
    training: Any,
    out_dir: Path,
    split: str = "train",
    holdout: Any = None,
    holdout_split: str = "val",
    progress: bool = True,
    **calibration: Any,
) -> list[dict[str, Any]]:
    """Index ``training``'s ``split`` with both copy checks and calibrate them; their ``guard.json`` entries.

    Parameters
    ----------
    training, split
        The protected data (SOURCE string or data source) and its split.
    out_dir
        The guard folder; each check goes to ``out_dir/<name>/`` (an older one there is replaced).
    holdout, holdout_split
        The held-out patients of the calibration (default ``training`` itself) and their split.
    progress
        Progress bars.
    calibration
        More options of :func:`~monai_pso.calibrate.calibrate_threshold` (``n_bootstrap``, ``holdout_percentile``...;
        ``rule`` defaults to ``holdout``).

    Returns
    -------
    list of dict
        The entries of ``copy`` and ``copy-regions`` (:func:`~monai_pso.guard.entries.check_entry`).
    """
    from monai_pso.data import load_source
    from monai_pso.embed.aligned import AlignedEmbedder
    from monai_pso.guard.entries import build_check

    training = load_source(training)
    holdout = training if holdout is None else load_source(holdout)
    calibration = {"rule": "holdout", **calibration}
    entries = []
    for windows, name in CHECK_NAMES.items():
        folder = Path(out_dir) / name
        if folder.exists():
            shutil.rmtree(folder)
        entries.append(build_check(name, AlignedEmbedder(windows=windows), training, out_dir, split, holdout, holdout_split, progress, **calibration))
    return entries
