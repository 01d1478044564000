"""Intensity presets that map a modality's raw values to ``[0, 1]``, built from MONAI transforms.

=============  ============================================================================
preset         mapping
=============  ============================================================================
``ct``         Hounsfield window [-1000, 1000] HU -> [0, 1], clipped
``ct_lung``    window [-1350, 150] HU
``ct_soft``    window [-160, 240] HU
``mri``        0.5th..99.5th percentile of the image -> [0, 1], clipped
``pet``        0th..99.5th percentile -> [0, 1], clipped
``pet_suv``    SUV-like: value / mean of the image's positive voxels, window [0, 10] -> [0, 1]
``uint8``      value / 255 (8-bit sources: MedMNIST, PNG, JPEG), clipped
``minmax``     per-image min..max -> [0, 1]
``none``       unchanged (the source is already in [0, 1], e.g. the phantom)
=============  ============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles, Transform
from monai.utils import TransformBackends

from monai_pso.errors import ConfigurationError, ImageValueError

#: Default preset per modality, used by readers that know the modality but not the value range.
MODALITY_DEFAULT = {"ct": "ct", "mri": "mri", "pet": "pet", "xray": "minmax", "us": "minmax", "other": "minmax"}


def _suv_like(image: torch.Tensor) -> torch.Tensor:
    positive = image[image > 0]
    scale = float(positive.mean()) if positive.numel() else 1.0
    return ScaleIntensityRange(0.0, 10.0, 0.0, 1.0, clip=True)(image / max(scale, 1e-12))


#: Each preset takes a float tensor ``(C, *spatial)`` and returns one in ``[0, 1]``.
PRESETS: dict[str, Callable] = {
    "ct": ScaleIntensityRange(-1000.0, 1000.0, 0.0, 1.0, clip=True),
    "ct_lung": ScaleIntensityRange(-1350.0, 150.0, 0.0, 1.0, clip=True),
    "ct_soft": ScaleIntensityRange(-160.0, 240.0, 0.0, 1.0, clip=True),
    "mri": ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True),
    "pet": ScaleIntensityRangePercentiles(0.0, 99.5, 0.0, 1.0, clip=True),
    "pet_suv": _suv_like,
    "uint8": ScaleIntensityRange(0.0, 255.0, 0.0, 1.0, clip=True),
    "minmax": ScaleIntensity(0.0, 1.0),
    "none": lambda image: image,
}


class IntensityPreset(Transform):
    """Apply a named intensity preset; refuses NaN or Inf.

    Parameters
    ----------
    preset
        A key of :data:`PRESETS`.

    Examples
    --------
    >>> out = IntensityPreset("uint8")(np.full((1, 2, 2), 255, np.uint8))
    >>> float(out.max())
    1.0
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, preset: str) -> None:
        if preset not in PRESETS:
            raise ConfigurationError(f"preset={preset!r}: unknown intensity preset, choose from {', '.join(PRESETS)}")
        self.preset = preset

    def __call__(self, image):
        if isinstance(image, np.ndarray) and not image.flags.writeable:
            image = image.copy()  # torch cannot wrap read-only (e.g. memory-mapped) arrays
        values = torch.as_tensor(image)
        if not torch.isfinite(values).all():
            raise ImageValueError("image holds NaN or Inf values")
        return PRESETS[self.preset](values.float() if not values.is_floating_point() else values)


class IntensityPresetd(MapTransform):
    """Dictionary version of :class:`IntensityPreset`; the preset is read from each item's ``preset_key``.

    Parameters
    ----------
    keys
        Image keys to normalise.
    preset_key
        Item key holding the preset name (datalists from :mod:`monai_pso.data` set ``normalize``).
    default
        Preset used when the item has no ``preset_key``.
    allow_missing_keys
        Skip absent image keys instead of raising.

    Examples
    --------
    >>> d = IntensityPresetd("image")({"image": np.full((1, 2, 2), 51, np.uint8), "normalize": "uint8"})
    >>> round(float(d["image"].max()), 2)
    0.2
    """

    backend = IntensityPreset.backend

    def __init__(self, keys: KeysCollection, preset_key: str = "normalize", default: str = "minmax", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.preset_key = preset_key
        self.default = default

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        transform = IntensityPreset(str(d.get(self.preset_key, self.default)))
        for key in self.key_iterator(d):
            d[key] = transform(d[key])
        return d
