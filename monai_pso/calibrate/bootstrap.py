"""Bootstrap by patient: confidence intervals that respect that images of one person are not independent.

Each replicate draws as many patients as there are, with replacement, and takes all images of each
drawn patient; a statistic is recomputed on every replicate and the interval is the central
``confidence`` share of the replicate values (percentile bootstrap).

Examples
--------
>>> resampler = PatientResampler(np.array(["a", "a", "b", "c"]))
>>> len(resampler.groups), sorted(len(g) for g in resampler.groups)
(3, [1, 1, 2])
>>> reps = bootstrap_percentile(np.array([1.0, 1.0, 2.0, 3.0]), resampler, 50, 200, np.random.default_rng(0))
>>> reps.shape, bool(reps.min() >= 1.0 and reps.max() <= 3.0)
((200,), True)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class PatientResampler:
    """Image positions grouped by patient, to draw patient-level bootstrap samples.

    Parameters
    ----------
    patients
        ``(N,)`` patient id of each image.
    """

    def __init__(self, patients: np.ndarray) -> None:
        _, inverse = np.unique(np.asarray(patients), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1]) if len(order) else []

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Positions of the images of ``len(groups)`` patients drawn with replacement."""
        chosen = rng.integers(0, len(self.groups), len(self.groups))
        return np.concatenate([self.groups[i] for i in chosen])


def bootstrap_percentile(values: np.ndarray, resampler: PatientResampler, percentile: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` replicate values of ``np.percentile(values, percentile)`` over patient-resampled images."""
    return np.array([np.percentile(values[resampler.sample(rng)], percentile) for _ in range(n)])


def bootstrap_statistic(values: np.ndarray, resampler: PatientResampler, statistic: Callable[[np.ndarray], float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` replicate values of ``statistic(values)`` over patient-resampled images.

    Examples
    --------
    >>> reps = bootstrap_statistic(np.array([0.0, 1.0, 1.0]), PatientResampler(np.array(["a", "b", "b"])), np.mean, 100, np.random.default_rng(0))
    >>> bool(reps.min() >= 0.0 and reps.max() <= 1.0), reps.shape
    (True, (100,))
    """
    return np.array([statistic(values[resampler.sample(rng)]) for _ in range(n)])


def auc_smaller(smaller: np.ndarray, larger: np.ndarray) -> float:
    """Mann-Whitney AUC: P(a < b) + P(a == b) / 2 for ``a`` from ``smaller`` and ``b`` from ``larger``.

    Examples
    --------
    >>> auc_smaller(np.array([0.1, 0.2]), np.array([0.3, 0.4])), auc_smaller(np.array([0.5]), np.array([0.5, 0.1]))
    (1.0, 0.25)
    """
    a, b = np.asarray(smaller, np.float64), np.sort(np.asarray(larger, np.float64))
    if not len(a) or not len(b):
        return float("nan")
    below, above = np.searchsorted(b, a, side="left"), np.searchsorted(b, a, side="right")
    return float(((len(b) - above) + 0.5 * (above - below)).sum() / (len(a) * len(b)))


def bootstrap_auc(values: np.ndarray, first: np.ndarray, resampler: PatientResampler, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` replicate values of :func:`auc_smaller` (``values[first]`` vs ``values[~first]``) over patient-resampled positions.

    Each patient's positions of both kinds are drawn together, so a replicate keeps the pairing of a
    patient's two kinds of distance.
    """
    first = np.asarray(first, bool)
    replicates = np.empty(n)
    for i in range(n):
        chosen = resampler.sample(rng)
        replicates[i] = auc_smaller(values[chosen[first[chosen]]], values[chosen[~first[chosen]]])
    return replicates


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates.

    Examples
    --------
    >>> percentile_interval(np.arange(101.0), 0.5)
    (25.0, 75.0)
    """
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)
