"""Copy rates: the share of released images within a given distance of a training image.

Levels are fractions of a natural scale of each embedding, the median distance from a holdout image
to its nearest training image (how far an unseen patient typically lies), plus the release's
threshold ``tau`` in the guard's own embedding (where the gate promises a copy rate of 0). Each row
also gives the same share for the holdout images: real, never-trained images that happen to lie that
close (near-duplicates in the source data), the baseline a release should be compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monai_pso.audit.intervals import Rate

#: Default levels, as fractions of the median holdout-to-training nearest-neighbour distance.
DEFAULT_FRACTIONS = (0.05, 0.1, 0.25, 0.5)


@dataclass(frozen=True)
class CopyLevel:
    """A named distance level."""

    name: str
    distance: float


def copy_levels(holdout_to_training: np.ndarray, fractions: Sequence[float] = DEFAULT_FRACTIONS, tau: float | None = None) -> list[CopyLevel]:
    """Fractions of the median holdout-to-training distance, and ``tau`` when given.

    Examples
    --------
    >>> [(l.name, l.distance) for l in copy_levels(np.array([1.0, 2.0, 3.0]), (0.5,), tau=0.3)]
    [('0.5 x median holdout NN', 1.0), ('tau', 0.3)]
    """
    median = float(np.median(holdout_to_training))
    levels = [CopyLevel(f"{f:g} x median holdout NN", f * median) for f in fractions]
    if tau is not None:
        levels.append(CopyLevel("tau", float(tau)))
    return levels


@dataclass(frozen=True)
class CopyRateRow:
    """One row of the copy-rate table: released and holdout shares below one distance level."""

    embedder: str
    level: CopyLevel
    released: Rate
    holdout: Rate
    patients_copied: int

    def to_dict(self) -> dict:
        return {
            "embedder": self.embedder,
            "level": self.level.name,
            "distance": self.level.distance,
            "released_share": self.released.value,
            "released_ci": list(self.released.ci),
            "released_images": int(self.released.successes),
            "holdout_share": self.holdout.value,
            "holdout_ci": list(self.holdout.ci),
            "training_patients_copied": self.patients_copied,
        }


def copy_rate_table(
    embedder: str,
    released_to_training: np.ndarray,
    nearest_patients: Sequence[str],
    holdout_to_training: np.ndarray,
    levels: Sequence[CopyLevel],
    confidence: float = 0.95,
) -> list[CopyRateRow]:
    """Per level: the share of released (and holdout) images closer than it to a training image.

    Parameters
    ----------
    released_to_training, nearest_patients
        Per released image, the distance to the nearest training image and that image's patient.
    holdout_to_training
        Per holdout image, the distance to the nearest training image.

    Examples
    --------
    >>> rows = copy_rate_table("pixel", np.array([0.0, 2.0]), ["p1", "p2"], np.array([1.0, 3.0]), [CopyLevel("x", 1.5)])
    >>> rows[0].released.value, rows[0].holdout.value, rows[0].patients_copied
    (0.5, 0.5, 1)
    """
    released_to_training = np.asarray(released_to_training, np.float64)
    holdout_to_training = np.asarray(holdout_to_training, np.float64)
    rows = []
    for level in levels:
        close = released_to_training < level.distance
        rows.append(
            CopyRateRow(
                embedder,
                level,
                Rate(int(close.sum()), len(close), confidence),
                Rate(int((holdout_to_training < level.distance).sum()), len(holdout_to_training), confidence),
                len({p for p, c in zip(nearest_patients, close) if c}),
            )
        )
    return rows
