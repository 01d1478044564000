"""SOURCE strings: one short string names a dataset, in the CLI and in bundle configs.

Syntax: ``LOCATION[?key=value&key=value...]``

- ``phantom:2d`` / ``phantom:3d``: the embedded procedural dataset (:mod:`monai_pso.data.phantom`);
- ``path/to/file.npz``: a MedMNIST file (2D or 3D, any size variant);
- ``path/to/folder``: NIfTI, DICOM, or PNG/JPEG files, with an optional ``datalist=`` CSV/JSON.

Options every source takes: ``modality`` (ct, mri, pet, xray, us, other), ``normalize`` (an intensity
preset, :mod:`monai_pso.data.normalize`), ``seed`` and ``ratios`` (patient-level split of records
the source leaves unassigned, e.g. ``ratios=0.7,0.15,0.15`` for train, val, test). Other options belong
to one reader and are listed in ``docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl

from monai_pso.data.records import MODALITIES, DataSource, ImageRecord, check_unique_item_ids
from monai_pso.errors import DataSourceError, UnknownSourceError

#: Options read by :func:`load_source` itself, whatever the reader.
COMMON_OPTIONS = ("modality", "normalize", "seed", "ratios")


@dataclass
class SourceOptions:
    """The ``key=value`` options of a SOURCE string, with typed accessors that name the source on error.

    Examples
    --------
    >>> opts = SourceOptions("phantom:2d?size=32", {"size": "32"})
    >>> opts.get_int("size", 64), opts.get_int("patients", 16)
    (32, 16)
    """

    source: str
    values: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    #: Set by a reader whose labels were class names: the names, in the order of their class indices.
    class_names: tuple[str, ...] | None = None

    def get_str(self, key: str, default: str | None = None) -> str | None:
        self.used.add(key)
        return self.values.get(key, default)

    def get_int(self, key: str, default: int) -> int:
        return self._typed(key, default, int, "an integer")

    def get_float(self, key: str, default: float) -> float:
        return self._typed(key, default, float, "a number")

    def get_floats(self, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
        raw = self.get_str(key)
        if raw is None:
            return default
        try:
            return tuple(float(v) for v in raw.split(","))
        except ValueError:
            raise DataSourceError(self.source, f"option {key}={raw!r} must be comma-separated numbers") from None

    def _typed(self, key, default, kind, what):
        raw = self.get_str(key)
        if raw is None:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise DataSourceError(self.source, f"option {key}={raw!r} must be {what}") from None

    def check_all_used(self) -> None:
        """Raise when the SOURCE string holds an option no reader understood (a typo, usually)."""
        unknown = sorted(set(self.values) - self.used)
        if unknown:
            raise DataSourceError(self.source, f"unknown option(s): {', '.join(unknown)}")


#: A reader turns a location plus options into records (splits may be left ``None``).
Reader = Callable[[Path, SourceOptions], list[ImageRecord]]


def parse_source(source: str) -> tuple[str, SourceOptions]:
    """Split a SOURCE string into its location and options.

    Examples
    --------
    >>> loc, opts = parse_source("phantom:3d?patients=8&size=24")
    >>> loc, opts.values
    ('phantom:3d', {'patients': '8', 'size': '24'})
    """
    source = str(source).strip()
    if not source:
        raise UnknownSourceError(source, "empty SOURCE")
    location, _, query = source.partition("?")
    values = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    return location, SourceOptions(source, values)


def _pick_reader(location: str, source: str) -> tuple[Reader, Path]:
    if location.startswith("phantom:"):
        from monai_pso.data.phantom import reader_for

        return reader_for(location, source), Path(location)
    path = Path(location).expanduser()
    if not path.exists():
        raise DataSourceError(location, "no such file or folder")
    if path.is_dir():
        from monai_pso.data.folders import read_folder

        return read_folder, path
    if path.suffix.lower() == ".npz":
        from monai_pso.data.medmnist import read_medmnist

        return read_medmnist, path
    raise UnknownSourceError(location, "not a known SOURCE (expected phantom:2d, phantom:3d, a MedMNIST .npz, or a folder)")


def load_source(source: str | DataSource) -> DataSource:
    """Read the dataset a SOURCE string names, with every record's patient, split and modality set.

    Splits the file defines are kept; records without one are split by patient
    (:func:`monai_pso.data.splits.assign_patient_splits`).

    Examples
    --------
    >>> src = load_source("phantom:2d?patients=6&acquisitions=3&size=32&seed=1")
    >>> {r.split for r in src} <= {"train", "val", "test"}
    True
    """
    if isinstance(source, DataSource):
        return source
    from monai_pso.data.splits import assign_patient_splits

    location, options = parse_source(source)
    reader, path = _pick_reader(location, source)
    modality = options.get_str("modality")
    normalize = options.get_str("normalize")
    seed = options.get_int("seed", 0)
    ratios = options.get_floats("ratios", (0.7, 0.15, 0.15))
    records = reader(path, options)
    options.check_all_used()
    if not records:
        raise DataSourceError(location, "holds no images")
    if modality is not None:
        if modality not in MODALITIES:
            raise DataSourceError(source, f"modality={modality!r} is not one of {', '.join(MODALITIES)}")
        records = [replace(r, modality=modality) for r in records]
    if normalize is not None:
        from monai_pso.data.normalize import PRESETS

        if normalize not in PRESETS:
            raise DataSourceError(source, f"normalize={normalize!r} is not one of {', '.join(PRESETS)}")
        records = [replace(r, normalize=normalize) for r in records]
    check_unique_item_ids(records, location)
    records = assign_patient_splits(records, ratios=ratios, seed=seed, location=source)
    return DataSource(records, source, class_names=options.class_names)
