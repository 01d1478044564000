"""Patient cohorts of an audit: disjointness checks and size-matched patient subsamples.

The singling-out attack compares a training subsample with the control patients, in equal numbers of
*patients*: a nearest-neighbour statistic depends on the size of the set it searches, so an unequal
comparison would show "leakage" that is only a size effect. (The DCR test needs no subsample: released
and holdout images are both measured against the full training set, :mod:`monai_pso.audit.dcr`.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from monai_pso.errors import DataSourceError

if TYPE_CHECKING:
    from monai_pso.audit.distances import EmbeddedImages


def check_disjoint(cohorts: Mapping[str, Sequence[str]]) -> None:
    """Raise when a patient appears in two cohorts (e.g. training and holdout).

    Examples
    --------
    >>> check_disjoint({"training": ["a", "b"], "holdout": ["c"]})
    >>> check_disjoint({"training": ["a"], "holdout": ["a"]})
    Traceback (most recent call last):
    ...
    monai_pso.errors.DataSourceError: holdout: 1 patient(s) also in training (a); an audit needs disjoint patients
    """
    names = list(cohorts)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(set(cohorts[first]) & set(cohorts[second]))
            if shared:
                raise DataSourceError(
                    second, f"{len(shared)} patient(s) also in {first} ({', '.join(shared[:5])}); an audit needs disjoint patients"
                )


def sample_patients(patients: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` patients drawn without replacement, reproducibly (independent of the input order).

    Examples
    --------
    >>> sample_patients(["c", "a", "b"], 2, seed=0) == sample_patients(["a", "b", "c"], 2, seed=0)
    True
    """
    pool = sorted(set(patients))
    if n >= len(pool):
        return pool
    chosen = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return sorted(pool[i] for i in chosen)


def size_matched(first: EmbeddedImages, second: EmbeddedImages, seed: int) -> tuple[EmbeddedImages, EmbeddedImages]:
    """Both image sets cut to the same number of patients: the larger one subsampled (by ``seed``)."""
    n = min(len(first.patients()), len(second.patients()))
    return (
        first.select_patients(sample_patients(first.patients(), n, seed)),
        second.select_patients(sample_patients(second.patients(), n, seed + 1)),
    )
