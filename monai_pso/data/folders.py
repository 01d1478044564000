"""A folder of NIfTI, DICOM or PNG/JPEG images as a dataset, optionally described by a datalist.

The folder is searched recursively and must hold one kind of image: NIfTI (``.nii``, ``.nii.gz``),
DICOM (``.dcm``, ``.dicom``, ``.ima``, or no suffix with the ``DICM`` marker) or PNG/JPEG. Other
files (CSV, text, hidden files) are ignored. DICOM slices of one series become one volume
(:func:`monai_pso.data.dicom.group_series`); multi-frame files and lone slices stay single images.

Without a datalist, ``patient_id`` is the DICOM ``PatientID`` tag, else the file name without its
suffix, and ``item_id`` is the path relative to the folder without suffix (``<folder>/series-<UID>``
for a multi-slice series). Images keep their path (read lazily by :func:`monai_pso.data.read_image`).

SOURCE options
    ``datalist=FILE``: a CSV or JSON file (relative to the folder, or absolute) listing the images to
    use, with ``image`` (a file, or a folder holding one DICOM series, relative to the folder) and
    optionally ``patient_id``, ``label``, ``split``, ``item_id``; other columns go to the record's
    ``extra``. JSON is a list of such objects or a MONAI datalist (``training``/``validation``/``test``).
    A ``label`` column of class names (``normal``, ``bacterial_pneumonia``) is read as class indices, the
    names numbered in sorted order and kept as the dataset's ``class_names``.
    ``mixed_shapes=1``: accept images of different shapes (refused by default, since batches need one
    shape; no option resamples them). ``series=0``: read every DICOM file as its own image instead of
    assembling series.

Examples
--------
>>> import tempfile, numpy as np
>>> from PIL import Image
>>> from monai_pso.data import load_source
>>> folder = tempfile.mkdtemp()
>>> for name in ("p1", "p2", "p3"):
...     Image.fromarray(np.full((8, 8), 9, np.uint8)).save(f"{folder}/{name}.png")
>>> src = load_source(folder)
>>> [(r.item_id, r.patient_id, r.normalize) for r in src][:1]
[('p1', 'p1', 'uint8')]
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from monai_pso.data import dicom
from monai_pso.data.files import DICOM, PICTURE, ImageHeader, file_kind, read_image_header, strip_suffix
from monai_pso.data.normalize import MODALITY_DEFAULT
from monai_pso.data.records import ImageRecord
from monai_pso.data.sources import SourceOptions
from monai_pso.errors import MIXED_SHAPES_HINT, DataSourceError

#: Columns of a datalist that set record fields; any other column goes to ``extra``.
DATALIST_FIELDS = ("image", "patient_id", "label", "split", "item_id")
_SPLIT_ALIASES = {"training": "train", "validation": "val", "valid": "val", "testing": "test"}
_KIND_NAMES = {"nifti": "NIfTI", "picture": "PNG/JPEG", "dicom": "DICOM"}


@dataclass
class _FolderImage:
    kind: str
    image: str | tuple[str, ...]
    item_id: str
    patient_id: str
    modality: str
    header: ImageHeader
    extra: dict[str, Any] = field(default_factory=dict)
    label: int | tuple[int, ...] | None = None
    split: str | None = None


def read_folder(path: Path, options: SourceOptions) -> list[ImageRecord]:
    """Records of the images in ``path`` (see the module docstring for the rules and options).

    Raises
    ------
    DataSourceError
        When the folder holds no images, mixes kinds, mixes shapes (without ``mixed_shapes=1``), or
        its datalist is malformed or names absent files.
    """
    datalist = options.get_str("datalist")
    allow_mixed = _flag(options, "mixed_shapes", False)
    as_series = _flag(options, "series", True)
    modality = options.get_str("modality")
    if datalist:
        images, options.class_names = _datalist_images(path, _resolve(path, datalist), as_series)
    else:
        images = _folder_images(path, as_series)
    if not allow_mixed:
        _check_one_shape(images, path)
    return [_record(image, modality) for image in images]


def _flag(options: SourceOptions, key: str, default: bool) -> bool:
    value = options.get_int(key, int(default))
    if value not in (0, 1):
        raise DataSourceError(options.source, f"option {key}={value} must be 0 or 1")
    return bool(value)


def _resolve(folder: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else folder / path


def _relative(path: str | Path, folder: Path) -> str:
    return Path(os.path.relpath(path, folder)).as_posix()


def _record(image: _FolderImage, modality: str | None) -> ImageRecord:
    modality = modality or image.modality
    eight_bit = image.kind == PICTURE and image.header.dtype == "uint8"
    return ImageRecord(
        item_id=image.item_id,
        patient_id=image.patient_id,
        image=image.image,
        label=image.label,
        split=image.split,
        modality=modality,
        spacing=image.header.spacing,
        normalize="uint8" if eight_bit else MODALITY_DEFAULT.get(modality, "minmax"),
        extra=image.extra,
    )


def _image_files(folder: Path) -> dict[str, list[Path]]:
    """Image files below ``folder`` by kind, in sorted order; hidden files and other kinds skipped."""
    by_kind: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            kind = file_kind(path)
            if kind is not None:
                by_kind.setdefault(kind, []).append(path)
    return by_kind


def _one_kind(by_kind: dict[str, list[Path]], location: Path) -> str:
    if not by_kind:
        raise DataSourceError(location, "holds no NIfTI, DICOM, PNG or JPEG files")
    if len(by_kind) > 1:
        found = ", ".join(f"{_KIND_NAMES[kind]} ({files[0]})" for kind, files in sorted(by_kind.items()))
        raise DataSourceError(location, f"mixes kinds of image files: {found}; a dataset holds one kind (a datalist= can pick the files)")
    return next(iter(by_kind))


def _progress(items: list, what: str):
    return tqdm(items, desc=what, unit="file", disable=len(items) <= 50, leave=False)


def _folder_images(folder: Path, as_series: bool) -> list[_FolderImage]:
    by_kind = _image_files(folder)
    kind = _one_kind(by_kind, folder)
    return _images_of(kind, by_kind[kind], folder, as_series)


def _images_of(kind: str, files: list[Path], folder: Path, as_series: bool) -> list[_FolderImage]:
    """One image per file (NIfTI, PNG/JPEG) or per DICOM series."""
    if kind == DICOM:
        return _dicom_images(files, folder, as_series)
    images = []
    for path in _progress(files, "Reading headers"):
        item_id = strip_suffix(_relative(path, folder))
        images.append(_FolderImage(kind, str(path), item_id, Path(item_id).name, "other", read_image_header(path)))
    return images


def _dicom_images(files: list[Path], folder: Path, as_series: bool) -> list[_FolderImage]:
    headers = dicom.image_headers(_progress(files, "Reading DICOM headers"))
    groups = dicom.group_series(headers, folder) if as_series else [(header,) for header in headers]
    images = []
    for group in groups:
        first = group[0]
        if len(group) == 1:
            image: str | tuple[str, ...] = first.path
            item_id = strip_suffix(_relative(first.path, folder))
            fallback_patient = Path(item_id).name
        else:
            image = tuple(h.path for h in group)
            parent = _relative(Path(first.path).parent, folder)
            item_id = f"series-{first.series_uid}" if parent == "." else f"{parent}/series-{first.series_uid}"
            fallback_patient = item_id
        header = dicom.series_header(group)
        images.append(_FolderImage(DICOM, image, item_id, first.patient_id or fallback_patient, first.modality, header, first.extra()))
    return images


def _datalist_images(folder: Path, datalist: Path, as_series: bool) -> tuple[list[_FolderImage], tuple[str, ...] | None]:
    """The images a datalist names, and its class names when its labels are names (else ``None``)."""
    entries = read_datalist(datalist)
    class_names = number_class_names(entries, datalist)
    targets = [_resolve(folder, entry["image"]) for entry in entries]
    missing = [str(target) for target in targets if not target.exists()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataSourceError(datalist, f"names {len(missing)} absent file(s): {', '.join(missing[:3])}{more}")
    kinds: dict[str, list[Path]] = {}
    images = []
    for entry, target in _progress(list(zip(entries, targets)), "Reading headers"):
        image = _datalist_image(target, folder, as_series, datalist)
        kinds.setdefault(image.kind, []).append(target)
        for key, value in entry.items():
            if key == "image" or value is None:
                continue
            if key in DATALIST_FIELDS:
                setattr(image, key, str(value) if key in ("patient_id", "item_id") else value)
            else:
                image.extra[key] = value
        images.append(image)
    _one_kind(kinds, datalist)
    return images, class_names


def _datalist_image(target: Path, folder: Path, as_series: bool, datalist: Path) -> _FolderImage:
    """The one image a datalist entry names: a file, or a folder holding one DICOM series."""
    if target.is_dir():
        files = _image_files(target).get(DICOM, [])
        images = _dicom_images(files, folder, as_series) if files else []
    else:
        kind = file_kind(target)
        if kind is None:
            raise DataSourceError(target, "not a NIfTI (.nii, .nii.gz), DICOM, PNG or JPEG file")
        images = _images_of(kind, [target], folder, as_series)
    if len(images) != 1:
        raise DataSourceError(datalist, f"{target} must hold exactly one image (a file, or a folder of one DICOM series); found {len(images)}")
    return images[0]


def _check_one_shape(images: list[_FolderImage], location: Path) -> None:
    first = images[0]
    for image in images[1:]:
        if image.header.shape != first.header.shape:
            raise DataSourceError(
                location,
                f"images have different shapes: {_describe(first)} is {_shape(first)}, {_describe(image)} is {_shape(image)}; {MIXED_SHAPES_HINT}",
            )


def _describe(image: _FolderImage) -> str:
    return image.image if isinstance(image.image, str) else f"{image.image[0]} (+{len(image.image) - 1} slices)"


def _shape(image: _FolderImage) -> str:
    return "x".join(str(s) for s in image.header.shape)


def read_datalist(path: Path) -> list[dict[str, Any]]:
    """Entries of a CSV or JSON datalist, each with ``image`` and parsed ``label`` and ``split``.

    A label is an int, a tuple of ints (multi-label), or a class name (a ``str``, left for
    :func:`number_class_names`).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "list.csv"
    >>> _ = path.write_text("image,patient_id,label,split,age\\na.png,p1,1,train,40\\nb.png,p2,0 1,test,\\n")
    >>> read_datalist(path)[1]
    {'image': 'b.png', 'patient_id': 'p2', 'label': (0, 1), 'split': 'test', 'age': None}
    """
    if not path.is_file():
        raise DataSourceError(path, "datalist file not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataSourceError(path, "a datalist must be a .csv or .json file")
    try:
        rows = _csv_rows(path) if suffix == ".csv" else _json_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as error:
        raise DataSourceError(path, f"cannot read the datalist: {error}") from error
    if not rows:
        raise DataSourceError(path, "the datalist lists no images")
    return [_parsed_entry(row, number, path) for number, row in enumerate(rows, start=1)]


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    return [{key.strip(): (value.strip() or None) if isinstance(value, str) else value for key, value in row.items() if key} for row in rows]


def _json_rows(path: Path) -> list[dict[str, Any]]:
    content = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(content, list):
        return content
    if isinstance(content, dict):
        rows = []
        for section in ("training", "validation", "test", "testing"):
            for row in content.get(section) or []:
                rows.append({"split": _SPLIT_ALIASES.get(section, section), **row} if isinstance(row, dict) else row)
        return rows
    raise DataSourceError(path, "a JSON datalist must be a list of objects or a MONAI datalist (training/validation/test)")


def _parsed_entry(row: Any, number: int, path: Path) -> dict[str, Any]:
    if not isinstance(row, dict) or not row.get("image"):
        raise DataSourceError(path, f"entry {number} has no 'image'")
    entry = dict(row)
    entry["image"] = str(row["image"])
    if entry.get("label") is not None:
        entry["label"] = _parsed_label(entry["label"], number, path)
    if entry.get("split") is not None:
        entry["split"] = _SPLIT_ALIASES.get(str(entry["split"]).lower(), str(entry["split"]).lower())
    return entry


def _parsed_label(value: Any, number: int, path: Path) -> int | tuple[int, ...] | str:
    """An int, a tuple of ints from a list or from text like ``"0 1 1"``, ``"0;1;1"``, ``"[0, 1]"``, or a
    class name: text that is not numbers (``"normal"``, ``"viral pneumonia"``; ``"0.5"`` is refused)."""
    try:
        if isinstance(value, (list, tuple)):
            return tuple(_integer(v) for v in value)
        if not isinstance(value, str):
            return _integer(value)
        text = value.strip()
        parts = [part for part in re.split(r"[\s,;\[\]()]+", text) if part]
        if not parts:
            raise ValueError(value)
        try:
            values = tuple(_integer(part) for part in parts)
        except ValueError:
            if all(_is_number(part) for part in parts):
                raise  # 0.5: a number, but no class index
            return text
        return values if len(values) > 1 or text[:1] in "[(" else values[0]
    except (TypeError, ValueError):
        raise DataSourceError(path, f"entry {number}: label {value!r} is not an integer, a list of integers or a class name") from None


def number_class_names(entries: list[dict[str, Any]], path: Path) -> tuple[str, ...] | None:
    """Replace class-name labels by class indices, the names numbered in sorted order; return the names.

    A datalist whose labels are all integers (or lists of them) is left as it is (``None``). Once one
    label is a name, every label is read as a name (``0`` and ``normal`` are two classes); a list of
    labels among names is an error. Entries without a label keep none.

    Examples
    --------
    >>> entries = [{"label": "normal"}, {"label": "viral_pneumonia"}, {"label": "bacterial_pneumonia"}, {}]
    >>> number_class_names(entries, Path("list.csv")), [entry.get("label") for entry in entries]
    (('bacterial_pneumonia', 'normal', 'viral_pneumonia'), [1, 2, 0, None])
    """
    labelled = [(number, entry) for number, entry in enumerate(entries, start=1) if entry.get("label") is not None]
    names = [entry["label"] for _, entry in labelled if isinstance(entry["label"], str)]
    if not names:
        return None
    for number, entry in labelled:
        if isinstance(entry["label"], tuple):
            raise DataSourceError(path, f"entry {number}: label {entry['label']!r} is a list, but labels such as {names[0]!r} are class names; use one kind of label")
    classes = tuple(sorted({str(entry["label"]) for _, entry in labelled}))
    index = {name: position for position, name in enumerate(classes)}
    for _, entry in labelled:
        entry["label"] = index[str(entry["label"])]
    return classes


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _integer(value: Any) -> int:
    """``3``, ``"3"`` or ``3.0`` as 3; anything else raises ValueError."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)
