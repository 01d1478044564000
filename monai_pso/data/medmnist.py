"""MedMNIST ``.npz`` files (2D or 3D, any size variant: 28, 64, 128, 224) as a dataset.

The file defines the splits (``train_*``, ``val_*``, ``test_*`` keys). MedMNIST has no patient
identifiers, so each image is its own patient (``patient_id == item_id``, e.g.
``breastmnist-train-00012``, the prefix being the file name). Images stay in memory as
``(1, *spatial)`` uint8 arrays with the ``uint8`` intensity preset. Labels: one column -> ``int``,
several (multi-label, e.g. ChestMNIST) -> ``tuple`` of ints. Colour files (PathMNIST, DermaMNIST,
BloodMNIST, RetinaMNIST: ``(N, H, W, 3)``) are converted to grey with ITU-R 601 luma weights.

The default modality comes from the file name (pneumonia/chest -> ``xray``, breast -> ``us``,
organ/nodule/adrenal/fracture -> ``ct``, vessel -> ``mri``, otherwise ``other``); the common
``modality=`` option overrides it.

Examples
--------
>>> import tempfile, numpy as np
>>> from monai_pso.data import load_source
>>> path = tempfile.mkdtemp() + "/breastmnist.npz"
>>> arrays = {f"{s}_images": np.zeros((4, 28, 28), np.uint8) for s in ("train", "val", "test")}
>>> arrays.update({f"{s}_labels": np.array([[0], [1], [0], [1]], np.uint8) for s in ("train", "val", "test")})
>>> np.savez(path, **arrays)
>>> src = load_source(path)
>>> src[5].item_id, src[5].split, src[5].label, src[5].modality, src[5].image.shape
('breastmnist-val-00001', 'val', 1, 'us', (1, 28, 28))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_pso.data.files import as_source_error, rgb_to_grey
from monai_pso.data.records import SPLITS, ImageRecord
from monai_pso.data.sources import SourceOptions
from monai_pso.errors import DataSourceError

#: Keys every MedMNIST file holds.
REQUIRED_KEYS = tuple(f"{split}_{part}" for split in SPLITS for part in ("images", "labels"))

#: Substrings of the file name -> default modality (first match wins).
MODALITY_HINTS = (
    ("pneumonia", "xray"),
    ("chest", "xray"),
    ("breast", "us"),
    ("organ", "ct"),
    ("nodule", "ct"),
    ("adrenal", "ct"),
    ("fracture", "ct"),
    ("vessel", "mri"),
)


def default_modality(name: str) -> str:
    """The modality a MedMNIST file name suggests.

    Examples
    --------
    >>> default_modality("pneumoniamnist_balanced_subset"), default_modality("adrenalmnist3d_64"), default_modality("pathmnist")
    ('xray', 'ct', 'other')
    """
    lower = name.lower()
    return next((modality for hint, modality in MODALITY_HINTS if hint in lower), "other")


def read_medmnist(path: Path, options: SourceOptions) -> list[ImageRecord]:
    """Records of every image of a MedMNIST file, splits as the file defines them.

    Raises
    ------
    DataSourceError
        When the file is not a readable npz, lacks MedMNIST keys, or holds malformed arrays.
    """
    with as_source_error(path, "cannot read as a NumPy .npz file"):
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataSourceError(path, "not a .npz archive (a single .npy array?)")
        with archive:
            missing = [key for key in REQUIRED_KEYS if key not in archive.files]
            if missing:
                raise DataSourceError(path, f"not a MedMNIST file: missing keys {', '.join(missing)}")
            arrays = {key: archive[key] for key in REQUIRED_KEYS}
    modality = default_modality(path.stem)
    records = []
    for split in SPLITS:
        images = _grey_images(arrays[f"{split}_images"], path, split)
        labels = _labels(arrays[f"{split}_labels"], len(images), path, split)
        normalize = "uint8" if images.dtype == np.uint8 else "minmax"
        for index, (image, label) in enumerate(zip(images, labels)):
            item_id = f"{path.stem}-{split}-{index:05d}"
            records.append(ImageRecord(item_id, item_id, image[None], label=label, split=split, modality=modality, normalize=normalize))
    return records


def _grey_images(images: np.ndarray, path: Path, split: str) -> np.ndarray:
    """``(N, *spatial)`` grey images; colour ``(N, H, W, 3)`` converted to uint8 grey."""
    if images.ndim == 4 and images.shape[-1] == 3:
        grey = np.rint(rgb_to_grey(images))
        return np.clip(grey, 0, 255).astype(np.uint8) if images.dtype == np.uint8 else grey
    if images.ndim not in (3, 4):
        raise DataSourceError(path, f"{split}_images has shape {images.shape}; expected (N, H, W), (N, H, W, 3) or (N, D, H, W)")
    return images


def _labels(labels: np.ndarray, count: int, path: Path, split: str) -> list[int | tuple[int, ...]]:
    """One label per image: an int for a single column, a tuple of ints for multi-label files."""
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or len(labels) != count:
        raise DataSourceError(path, f"{split}_labels has shape {labels.shape}; expected ({count},) or ({count}, K) for {count} images")
    if labels.shape[1] == 1:
        return [int(v) for v in labels[:, 0]]
    return [tuple(int(v) for v in row) for row in labels]
