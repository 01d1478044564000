"""What a dataset holds, per split: items, patients, shapes, raw intensity range, labels, modality.

``monai-pso data summary SOURCE [--split S]`` prints :meth:`DatasetSummary.to_text`.

Examples
--------
>>> from monai_pso.data import load_source
>>> summary = summarize(load_source("phantom:2d?patients=4&acquisitions=2&size=16"), None)
>>> summary.to_dict()["splits"]["all"]["items"], summary.to_dict()["splits"]["all"]["shapes"]
(8, {'16x16': 8})
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from monai_pso.data.loading import read_image
from monai_pso.data.records import SPLITS, DataSource, ImageRecord

#: Datasets with more images than this show a progress bar while their images are read.
PROGRESS_MIN_IMAGES = 50


@dataclass
class SplitSummary:
    """The figures of one split (or of the whole dataset)."""

    items: int = 0
    patients: set[str] = field(default_factory=set)
    shapes: Counter = field(default_factory=Counter)
    minimum: float = float("inf")
    maximum: float = float("-inf")
    labels: Counter = field(default_factory=Counter)
    modalities: Counter = field(default_factory=Counter)

    def add(self, record: ImageRecord, values: np.ndarray) -> None:
        """Count one record whose raw image is ``values``."""
        self.items += 1
        self.patients.add(record.patient_id)
        self.shapes[tuple(values.shape[1:])] += 1
        if values.size:
            self.minimum = min(self.minimum, float(values.min()))
            self.maximum = max(self.maximum, float(values.max()))
        if record.label is not None:
            self.labels[record.label] += 1
        self.modalities[record.modality] += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "items": self.items,
            "patients": len(self.patients),
            "shapes": {_shape_text(shape): count for shape, count in sorted(self.shapes.items())},
            "intensity": [self.minimum, self.maximum] if self.items else None,
            "labels": {_label_text(label): count for label, count in sorted(self.labels.items(), key=lambda kv: str(kv[0]))},
            "modality": dict(sorted(self.modalities.items())),
        }


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)


def _label_text(label) -> str:
    return ",".join(str(v) for v in label) if isinstance(label, tuple) else str(label)


def _counts_text(counts: dict[str, int]) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{name} ({count})" for name, count in counts.items())


def _number(value: float) -> str:
    return f"{value:.6g}"


@dataclass
class DatasetSummary:
    """Per-split figures of a dataset; ``"all"`` sums the splits (shown when there are several).

    Examples
    --------
    >>> import numpy as np
    >>> from monai_pso.data import DataSource, ImageRecord
    >>> data = DataSource([ImageRecord("a", "p", np.arange(4, dtype=np.uint8).reshape(1, 2, 2), label=1, split="train")], "demo")
    >>> print(summarize(data).to_text())
    demo
    split  items  patients  shapes   intensity  labels  modality
    train  1      1         2x2 (1)  0 .. 3     1: 1    other
    """

    source: str
    splits: dict[str, SplitSummary]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"source": ..., "splits": {name: {items, patients, shapes, intensity, labels, modality}}}``."""
        return {"source": self.source, "splits": {name: split.to_dict() for name, split in self.splits.items()}}

    def to_text(self) -> str:
        """A table with one row per split."""
        header = ("split", "items", "patients", "shapes", "intensity", "labels", "modality")
        rows = [header]
        for name, split in self.splits.items():
            figures = split.to_dict()
            intensity = f"{_number(split.minimum)} .. {_number(split.maximum)}" if split.items else "-"
            labels = ", ".join(f"{label}: {count}" for label, count in figures["labels"].items()) or "-"
            shapes = ", ".join(f"{shape} ({count})" for shape, count in figures["shapes"].items()) or "-"
            rows.append((name, str(split.items), str(figures["patients"]), shapes, intensity, labels, _counts_text(figures["modality"]) if split.items else "-"))
        widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        return "\n".join([self.source, *lines])


def summarize(dataset: DataSource, split: str | None = None) -> DatasetSummary:
    """Count items, patients, shapes, raw intensity range, labels and modality per split.

    Every image is read (raw values, before any intensity preset); a progress bar shows when there
    are more than :data:`PROGRESS_MIN_IMAGES`.

    Parameters
    ----------
    dataset
        The dataset (from :func:`monai_pso.data.load_source`).
    split
        Only this split (``None``: every split, plus ``"all"`` when there are several).
    """
    records = list(dataset.split(split))
    names = [name for name in SPLITS if any(r.split == name for r in records)]
    names += sorted({str(r.split) for r in records if r.split not in SPLITS})
    splits = {name: SplitSummary() for name in names}
    total = SplitSummary()
    progress = tqdm(records, desc="Reading images", unit="image", disable=len(records) <= PROGRESS_MIN_IMAGES, leave=False)
    for record in progress:
        values = np.asarray(read_image(record.image))
        splits[record.split if record.split in SPLITS else str(record.split)].add(record, values)
        total.add(record, values)
    if len(splits) != 1:
        splits["all"] = total
    return DatasetSummary(dataset.description, splits)
