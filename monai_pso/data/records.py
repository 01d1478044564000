"""The one notion of a dataset record used everywhere, and a dataset as a list of them.

A :class:`ImageRecord` is one image of one patient. A :class:`DataSource` is what a SOURCE string
resolves to: its records plus a description. Both turn into MONAI datalists (lists of dicts) so that
stock MONAI datasets and transforms consume them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

#: What an image is: a file path, a tuple of paths (one DICOM series), or an in-memory array shaped
#: ``(1, *spatial)`` (channel first, as MONAI expects).
ImageRef = str | tuple[str, ...] | np.ndarray

#: Split names used throughout. ``None`` on a record means "not yet assigned".
SPLITS = ("train", "val", "test")

#: Modalities with intensity presets (see :mod:`monai_pso.data.normalize`).
MODALITIES = ("ct", "mri", "pet", "xray", "us", "other")


@dataclass(frozen=True)
class ImageRecord:
    """One image of one patient.

    Parameters
    ----------
    item_id
        Unique name of the image within its dataset (used for output file names and audit logs).
    patient_id
        Whose image it is. Every privacy decision is made per patient, never per image.
    image
        A path, a tuple of DICOM slice paths forming one series, or an array ``(1, *spatial)``.
    label
        Optional class label (int) or multi-label vector (tuple of ints).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``None`` (not yet assigned).
    modality
        One of :data:`MODALITIES`.
    spacing
        Voxel spacing in mm, spatial axes in array order, or ``None`` when unknown.
    normalize
        Name of the intensity preset that maps the raw values to ``[0, 1]``.
    extra
        Anything else a reader knows (study date, series description, covariates).

    Examples
    --------
    >>> r = ImageRecord("p1-a", "p1", np.zeros((1, 8, 8), np.uint8), label=1, modality="xray")
    >>> r.to_dict()["patient_id"], r.spatial_dims
    ('p1', 2)
    """

    item_id: str
    patient_id: str
    image: ImageRef
    label: int | tuple[int, ...] | None = None
    split: str | None = None
    modality: str = "other"
    spacing: tuple[float, ...] | None = None
    normalize: str = "minmax"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int | None:
        """2 or 3 when the image is in memory, else ``None`` (unknown until loaded)."""
        if isinstance(self.image, np.ndarray):
            return self.image.ndim - 1
        return None

    def with_split(self, split: str | None) -> ImageRecord:
        """A copy assigned to ``split``."""
        return replace(self, split=split)

    def to_dict(self) -> dict[str, Any]:
        """The MONAI datalist entry: ``image``, ``patient_id``, ``item_id`` and whatever else is set."""
        entry: dict[str, Any] = {
            "image": self.image,
            "patient_id": self.patient_id,
            "item_id": self.item_id,
            "modality": self.modality,
            "normalize": self.normalize,
        }
        if self.label is not None:
            entry["label"] = self.label
        if self.split is not None:
            entry["split"] = self.split
        if self.spacing is not None:
            entry["spacing"] = self.spacing
        entry.update(self.extra)
        return entry


@dataclass
class DataSource:
    """A dataset: its records and where they came from.

    Parameters
    ----------
    records
        Every image, with patient ids and splits assigned.
    description
        The SOURCE string (or a human description) it was read from; stored in index manifests.
    class_names
        When the source named its classes (a datalist whose labels are class names): the names, class
        ``i`` being ``class_names[i]``; ``None`` when labels are plain integers (or absent).

    Examples
    --------
    >>> from monai_pso.data import load_source
    >>> src = load_source("phantom:2d?patients=6&acquisitions=2&size=32")
    >>> len(src), len(src.patients())
    (12, 6)
    >>> sorted(set(r.split for r in src))
    ['test', 'train', 'val']
    """

    records: list[ImageRecord]
    description: str
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def split(self, name: str | Sequence[str] | None) -> DataSource:
        """The records of one split (or several, or all when ``name`` is ``None``)."""
        if name is None:
            return self
        names = {name} if isinstance(name, str) else set(name)
        return DataSource([r for r in self.records if r.split in names], f"{self.description} [split={','.join(sorted(names))}]", self.class_names)

    def patients(self) -> list[str]:
        """Patient ids in order of first appearance."""
        return list(dict.fromkeys(r.patient_id for r in self.records))

    def by_patient(self) -> dict[str, list[ImageRecord]]:
        """Records grouped by patient id."""
        groups: dict[str, list[ImageRecord]] = {}
        for record in self.records:
            groups.setdefault(record.patient_id, []).append(record)
        return groups

    def datalist(self, split: str | None = None) -> list[dict[str, Any]]:
        """MONAI datalist of ``split`` (all records when ``None``)."""
        return [r.to_dict() for r in self.split(split)]


def check_unique_item_ids(records: Iterable[ImageRecord], location: str | Path) -> None:
    """Raise :class:`~monai_pso.errors.DataSourceError` when two records share an ``item_id``."""
    from monai_pso.errors import DataSourceError

    counts = Counter(r.item_id for r in records)
    repeated = [item for item, n in counts.items() if n > 1]
    if repeated:
        raise DataSourceError(location, f"item ids must be unique, repeated: {', '.join(sorted(repeated)[:5])}")
