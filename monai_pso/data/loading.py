"""Turning a record's image reference into pixels: raw values, or normalised to ``[0, 1]``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import TransformBackends

from monai_pso.data.normalize import IntensityPreset
from monai_pso.data.records import ImageRecord, ImageRef


def read_image(image: ImageRef) -> np.ndarray:
    """Raw pixel values of an image reference, channel first ``(1, *spatial)``.

    Raises :class:`~monai_pso.errors.DataSourceError` naming the file when it cannot be read.

    Examples
    --------
    >>> read_image(np.zeros((1, 4, 4), np.uint8)).shape
    (1, 4, 4)
    """
    if isinstance(image, np.ndarray):
        return image
    from monai_pso.data.files import read_image_file

    return read_image_file(image)


def load_image(record: ImageRecord) -> np.ndarray:
    """The record's image as float32 ``(1, *spatial)`` in ``[0, 1]`` (its intensity preset applied).

    Examples
    --------
    >>> rec = ImageRecord("a", "p", np.full((1, 2, 2), 255, np.uint8), normalize="uint8")
    >>> float(load_image(rec).max())
    1.0
    """
    normalised = IntensityPreset(record.normalize)(read_image(record.image))
    return np.asarray(normalised, dtype=np.float32)


class LoadRecordImaged(MapTransform):
    """Load the images of a monai-pso datalist entry (paths, DICOM series or arrays) as float tensors.

    Values stay raw; follow with :class:`~monai_pso.data.normalize.IntensityPresetd` to map them to
    ``[0, 1]``. Stock MONAI transforms can follow directly.

    Examples
    --------
    >>> d = LoadRecordImaged("image")({"image": np.ones((1, 3, 3), np.uint8)})
    >>> d["image"].dtype
    torch.float32
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(np.asarray(read_image(d[key])), dtype=torch.float32)
        return d
