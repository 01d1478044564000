"""Patient-level splitting: deterministic by seed, no patient in two splits, file-defined splits kept."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from monai_pso.data.records import SPLITS, ImageRecord
from monai_pso.errors import DataSourceError


def _patient_order(patients: Sequence[str], seed: int) -> list[str]:
    """Patients in a seed-dependent order that does not depend on the order they were read in."""
    key = lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest()  # noqa: E731
    return sorted(patients, key=key)


def assign_patient_splits(
    records: Sequence[ImageRecord],
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    location: str | Path = "<records>",
) -> list[ImageRecord]:
    """Give every record without a split one, so that all images of a patient share a split.

    Parameters
    ----------
    records
        Records; those with a split already keep it.
    ratios
        Shares of patients for train, val and test (normalised to sum to 1).
    seed
        Changes the assignment; the same seed always gives the same splits.
    location
        Named in errors.

    Raises
    ------
    DataSourceError
        When a patient already appears in two splits, or the ratios are malformed.

    Examples
    --------
    >>> import numpy as np
    >>> recs = [ImageRecord(f"p{i}-{k}", f"p{i}", np.zeros((1, 4, 4))) for i in range(10) for k in range(2)]
    >>> out = assign_patient_splits(recs, (0.6, 0.2, 0.2), seed=0)
    >>> sorted({r.split for r in out})
    ['test', 'train', 'val']
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise DataSourceError(location, f"ratios must be three non-negative numbers (train, val, test), got {tuple(ratios)}")
    fixed: dict[str, str] = {}
    for record in records:
        if record.split is None:
            continue
        if record.split not in SPLITS:
            raise DataSourceError(location, f"item {record.item_id}: unknown split {record.split!r} (expected {', '.join(SPLITS)})")
        previous = fixed.setdefault(record.patient_id, record.split)
        if previous != record.split:
            raise DataSourceError(location, f"patient {record.patient_id} appears in two splits ({previous}, {record.split})")

    unassigned = [p for p in dict.fromkeys(r.patient_id for r in records) if p not in fixed]
    total = float(sum(ratios))
    order = _patient_order(unassigned, seed)
    bounds, cumulative = [], 0.0
    for share in ratios:
        cumulative += share / total
        bounds.append(round(cumulative * len(order)))
    assigned = dict(fixed)
    start = 0
    for split, stop in zip(SPLITS, bounds):
        for patient in order[start:stop]:
            assigned[patient] = split
        start = stop
    return [r if r.split is not None else r.with_split(assigned[r.patient_id]) for r in records]
