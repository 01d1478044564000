"""DCR holdout test: are released images closer to the training patients than to unseen patients?

For every released image, compare its distance to the closest record (DCR) of a training subsample
with its distance to the closest record of a holdout set of the *same number of patients*. Without
leakage the two sets are exchangeable and each is closer half the time: the share closer to training
is 0.5. A share significantly above 0.5 (one-sided exact binomial test) means the released images
sit nearer the training patients than chance allows.

Ties (equal distances, in practice only exact duplicates present in both sets) count half towards
the share and its Wilson interval; the binomial test, which needs a whole count, rounds the half
ties down (conservative for the one-sided test).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import floor

import numpy as np
from scipy.stats import binomtest

from monai_pso.audit.intervals import Rate


@dataclass(frozen=True)
class DcrResult:
    """Outcome of :func:`dcr_holdout_test`.

    Attributes
    ----------
    share
        Share of released images closer to training (ties half), with its Wilson interval.
    p_value
        One-sided exact binomial test of ``share > 0.5``.
    closer, ties, farther
        Counts of released images closer to training, tied, closer to the holdout.
    """

    share: Rate
    p_value: float
    closer: int
    ties: int
    farther: int

    def to_dict(self) -> dict:
        return {
            "share": self.share.value,
            "ci": list(self.share.ci),
            "p_value": self.p_value,
            "closer_to_training": self.closer,
            "ties": self.ties,
            "closer_to_holdout": self.farther,
            "released_images": self.share.trials,
        }


def dcr_holdout_test(to_training: np.ndarray, to_holdout: np.ndarray, confidence: float = 0.95) -> DcrResult:
    """Compare each released image's distance to training with its distance to the holdout.

    Parameters
    ----------
    to_training, to_holdout
        Per released image, the distance to the nearest image of the (size-matched) training
        subsample and of the holdout.

    Examples
    --------
    >>> result = dcr_holdout_test(np.array([0.0, 0.0, 1.0, 2.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    >>> result.share.value, result.closer, result.ties
    (0.625, 2, 1)
    """
    to_training, to_holdout = np.asarray(to_training, np.float64), np.asarray(to_holdout, np.float64)
    closer = int((to_training < to_holdout).sum())
    ties = int((to_training == to_holdout).sum())
    n = len(to_training)
    p_value = float(binomtest(closer + floor(ties / 2), n, 0.5, alternative="greater").pvalue)
    return DcrResult(Rate(closer + 0.5 * ties, n, confidence), p_value, closer, ties, n - closer - ties)
