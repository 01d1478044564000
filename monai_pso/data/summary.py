"""What a dataset holds, per split: items, patients, shapes, raw intensity range, labels, modality.

``monai-pso data summary SOURCE [--split S]`` prints :meth:`DatasetSummary.to_text` of
:func:`load_for_summary`: a folder of images of several shapes is summarised (a table of the shapes
with their counts), not refused as other commands refuse it.

Examples
--------
>>> from monai_pso.data import load_source
>>> summary = summarize(load_source("phantom:2d?patients=4&acquisitions=2&size=16"), None)
>>> summary.to_dict()["splits"]["all"]["items"], summary.to_dict()["splits"]["all"]["shapes"]
(8, {'16x16': 8})
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from monai_pso.data.loading import read_image
from monai_pso.data.records import SPLITS, DataSource, ImageRecord
from monai_pso.data.sources import load_source, parse_source
from monai_pso.errors import RESAMPLE_HINT

#: Datasets with more images than this show a progress bar while their images are read.
PROGRESS_MIN_IMAGES = 50

#: A split with more distinct shapes than this shows their number in the main table (all are in the shape table).
LISTED_SHAPES = 3


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

    Several shapes add a table of the shapes, a datalist of class names the numbering of its classes:

    >>> two = [ImageRecord(f"i{k}", f"p{k}", np.zeros((1, 2 + k, 2), np.uint8), label=k, split="train") for k in range(2)]
    >>> print(summarize(DataSource(two, "two", class_names=("cat", "dog"))).to_text())  # doctest: +ELLIPSIS
    two
    split  items  patients  shapes            intensity  labels      modality
    train  2      2         2x2 (1), 3x2 (1)  0 .. 0     0: 1, 1: 1  other
    classes: 0 = cat, 1 = dog (the datalist's label names, numbered in sorted order)
    2 image shapes (commands that need one shape refuse them; no SOURCE option resamples ...):
    shape  train
    2x2    1
    3x2    1
    """

    source: str
    splits: dict[str, SplitSummary]
    classes: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"source": ..., "classes": [names] or None, "splits": {name: {items, patients, shapes, intensity, labels, modality}}}``."""
        return {
            "source": self.source,
            "classes": list(self.classes) if self.classes is not None else None,
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
        }

    def to_text(self) -> str:
        """A table with one row per split; then the class names, and a table of the shapes when there are several."""
        header = ("split", "items", "patients", "shapes", "intensity", "labels", "modality")
        rows = [header]
        for name, split in self.splits.items():
            figures = split.to_dict()
            intensity = f"{_number(split.minimum)} .. {_number(split.maximum)}" if split.items else "-"
            labels = ", ".join(f"{label}: {count}" for label, count in figures["labels"].items()) or "-"
            if len(figures["shapes"]) > LISTED_SHAPES:
                shapes = f"{len(figures['shapes'])} shapes (below)"
            else:
                shapes = ", ".join(f"{shape} ({count})" for shape, count in figures["shapes"].items()) or "-"
            rows.append((name, str(split.items), str(figures["patients"]), shapes, intensity, labels, _counts_text(figures["modality"]) if split.items else "-"))
        lines = [self.source, *_table(rows)]
        if self.classes is not None:
            numbered = ", ".join(f"{index} = {name}" for index, name in enumerate(self.classes))
            lines.append(f"classes: {numbered} (the datalist's label names, numbered in sorted order)")
        lines.extend(self._shape_table())
        return "\n".join(lines)

    def _shape_table(self) -> list[str]:
        """Each distinct shape with its count per split, when there is more than one shape."""
        shapes = sorted(set().union(*(split.shapes for split in self.splits.values())))
        if len(shapes) < 2:
            return []
        rows = [("shape", *self.splits)]
        rows += [(_shape_text(shape), *(str(split.shapes.get(shape, 0) or "-") for split in self.splits.values())) for shape in shapes]
        return [f"{len(shapes)} image shapes (commands that need one shape refuse them; {RESAMPLE_HINT}):", *_table(rows)]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as left-aligned columns two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def load_for_summary(source: str | DataSource) -> DataSource:
    """:func:`~monai_pso.data.load_source`, with a folder's images of several shapes accepted (``mixed_shapes=1``,
    unless the SOURCE sets the option itself): a summary lists the shapes rather than refusing them.

    Examples
    --------
    >>> len(load_for_summary("phantom:2d?patients=2&acquisitions=1&size=8"))
    2
    """
    if not isinstance(source, str):
        return load_source(source)
    location, options = parse_source(source)
    if not Path(location).expanduser().is_dir() or "mixed_shapes" in options.values:
        return load_source(source)
    dataset = load_source(f"{source}{'&' if '?' in source else '?'}mixed_shapes=1")
    return replace(dataset, description=source)  # the SOURCE as the user wrote it


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
    return DatasetSummary(dataset.description, splits, dataset.class_names)
