"""Clean/degraded image pairs for denoising and super-resolution: MONAI transforms.

- :class:`SimulateLowDose` adds the noise of a reduced dose to an image in ``[0, 1]``: the value 1.0
  stands for ``counts`` detected quanta at full dose, so at dose fraction ``dose`` an image value
  ``x`` becomes ``Poisson(x * counts * dose) / (counts * dose)`` (``kind="poisson"``, natural for
  PET and photon-limited images) or its Gaussian approximation
  ``x + N(0, x / (counts * dose))`` (``kind="gaussian"``). This is an image-domain approximation;
  real CT noise arises in the projections.
- :class:`Downsample` reduces the resolution by an integer factor (2, 4, ...) by area averaging, in
  2D or 3D, optionally resizing back to the original size (the usual super-resolution input).

The dictionary versions keep the clean image and write the degraded one to ``output_key``. Given a
``seed``, :class:`SimulateLowDosed` draws each item's noise from the seed and the item's ``item_id``
(when the item has one), so an item is degraded identically whatever the order, worker or epoch.

Examples
--------
>>> import numpy as np
>>> pair = SimulateLowDosed("image", dose=0.25, seed=0)({"image": np.full((1, 8, 8), 0.5, np.float32), "item_id": "a"})
>>> sorted(pair), pair["degraded"].shape, bool(np.any(pair["degraded"] != 0.5))
(['degraded', 'image', 'item_id'], (1, 8, 8), True)
>>> Downsampled("image", factor=4, output_key="low")({"image": np.ones((1, 16, 16, 16))})["low"].shape
(1, 4, 4, 4)
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, convert_to_tensor, ensure_tuple

from monai_pso.errors import ConfigurationError, ImageValueError

NOISE_KINDS = ("poisson", "gaussian")
#: ``Downsample(resize_back=True)`` modes: torch interpolation per spatial dimensionality.
UPSAMPLE_MODES = {"nearest": ("nearest", "nearest"), "linear": ("bilinear", "trilinear"), "cubic": ("bicubic", None)}


def item_seed(seed: int, item_id: object, key: Hashable = "") -> int:
    """A 32-bit seed derived from a base seed, an item's id and the image key.

    Examples
    --------
    >>> item_seed(0, "p1-a") == item_seed(0, "p1-a"), item_seed(0, "p1-a") == item_seed(1, "p1-a")
    (True, False)
    """
    digest = hashlib.sha256(f"{seed}\x00{item_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class SimulateLowDose(Randomizable, Transform):
    """Noise of a reduced dose on an image in ``[0, 1]`` (see the module docstring for the model).

    Parameters
    ----------
    dose
        Fraction of the full dose, in ``(0, 1]``; lower means noisier.
    kind
        ``"poisson"`` (exact counting noise) or ``"gaussian"`` (its normal approximation).
    counts
        Quanta detected for an image value of 1.0 at full dose; sets the noise level.
    clip
        Clip the result to ``[0, 1]``.
    seed
        Seed of the random state (``None``: MONAI's default; see ``set_random_state``).

    Examples
    --------
    >>> noisy = SimulateLowDose(dose=0.1, seed=1)(np.full((1, 64, 64), 0.5, np.float32))
    >>> noisy.dtype, 0.0 < float(noisy.std()) < 0.05
    (dtype('float32'), True)
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, dose: float = 0.25, kind: str = "poisson", counts: float = 1e4, clip: bool = True, seed: int | None = None) -> None:
        if not 0.0 < dose <= 1.0:
            raise ConfigurationError(f"dose={dose!r}: must lie in (0, 1]")
        if kind not in NOISE_KINDS:
            raise ConfigurationError(f"kind={kind!r}: must be one of {', '.join(NOISE_KINDS)}")
        if counts <= 0:
            raise ConfigurationError(f"counts={counts!r}: must be positive")
        self.dose, self.kind, self.counts, self.clip = dose, kind, counts, clip
        self._noisy: np.ndarray | None = None
        if seed is not None:
            self.set_random_state(seed)

    def randomize(self, data: np.ndarray) -> None:
        """Draw the degraded version of ``data`` (a float array)."""
        scale = self.counts * self.dose
        expected = np.clip(data, 0.0, None).astype(np.float64) * scale
        if self.kind == "poisson":
            noisy = self.R.poisson(expected) / scale
        else:
            noisy = data + self.R.standard_normal(data.shape) * np.sqrt(expected) / scale
        self._noisy = np.clip(noisy, 0.0, 1.0) if self.clip else noisy

    def __call__(self, img, randomize: bool = True):
        """The degraded image, of the input's type (array or tensor), float32."""
        values = convert_to_numpy(img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ImageValueError("image holds NaN or Inf values")
        if randomize or self._noisy is None:
            self.randomize(values)
        if self._noisy.shape != values.shape:
            raise ValueError(f"the drawn noise has shape {self._noisy.shape}, the image {values.shape}; call with randomize=True")
        return convert_to_dst_type(self._noisy, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class Downsample(Transform):
    """Lower the resolution of a ``(C, *spatial)`` image by area averaging, 2D or 3D.

    Parameters
    ----------
    factor
        Integer reduction per spatial axis (2, 4, ...). Sizes not divisible by it are averaged over
        slightly uneven windows (adaptive average pooling).
    resize_back
        Resize the result back to the input size (a blurred image of the same shape).
    mode
        How to resize back: ``"nearest"``, ``"linear"`` (bi/trilinear) or ``"cubic"`` (2D only).

    Examples
    --------
    >>> image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> Downsample(2)(image)[0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    >>> Downsample(2, resize_back=True)(image).shape
    (1, 4, 4)
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, factor: int = 2, resize_back: bool = False, mode: str = "nearest") -> None:
        if int(factor) != factor or factor < 1:
            raise ConfigurationError(f"factor={factor!r}: must be a positive integer")
        if mode not in UPSAMPLE_MODES:
            raise ConfigurationError(f"mode={mode!r}: must be one of {', '.join(UPSAMPLE_MODES)}")
        self.factor, self.resize_back, self.mode = int(factor), resize_back, mode

    def __call__(self, img):
        """The downsampled image, as an array or a plain tensor like the input (metadata not kept)."""
        values = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        spatial = tuple(values.shape[1:])
        if len(spatial) not in (2, 3):
            raise ImageValueError(f"expected a (C, H, W) or (C, D, H, W) image, got shape {tuple(values.shape)}")
        small_size = tuple(size // self.factor for size in spatial)
        if min(small_size) < 1:
            raise ImageValueError(f"image of spatial size {spatial} is too small to downsample {self.factor}x")
        out = F.interpolate(values[None], size=small_size, mode="area")
        if self.resize_back:
            mode = UPSAMPLE_MODES[self.mode][len(spatial) - 2]
            if mode is None:
                raise ImageValueError(f"mode {self.mode!r} is only available for 2D images")
            out = F.interpolate(out, size=spatial, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
        out = out[0]
        return out.numpy() if isinstance(img, np.ndarray) else out


class _Paird(MapTransform):
    """Writes a degraded copy of each key to its output key, keeping the clean image."""

    def __init__(self, keys: KeysCollection, output_key: str | Sequence[str], allow_missing_keys: bool) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = ensure_tuple(output_key)
        if len(self.output_keys) != len(self.keys):
            raise ConfigurationError(f"output_key={self.output_keys}: give one output key per key {self.keys}")

    def degrade(self, data: Mapping[Hashable, object], key: Hashable):
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key, output_key in self.key_iterator(d, self.output_keys):
            d[output_key] = self.degrade(d, key)
        return d


class SimulateLowDosed(Randomizable, _Paird):
    """Dictionary version of :class:`SimulateLowDose`: writes the noisy image to ``output_key``.

    Parameters
    ----------
    keys
        Clean image keys.
    output_key
        Where to write the degraded image (one per key).
    dose, kind, counts, clip
        As in :class:`SimulateLowDose`.
    seed
        With a seed, each item's noise is drawn from ``(seed, item[id_key], key)``: reproducible per
        item. Items without ``id_key`` draw from the transform's random state (set from ``seed``).
    id_key
        Item key holding its id (monai-pso datalists set ``item_id``).
    allow_missing_keys
        Skip absent keys instead of raising.

    Examples
    --------
    >>> t = SimulateLowDosed("image", dose=0.5, seed=3)
    >>> item = {"image": np.full((1, 4, 4), 0.5, np.float32), "item_id": "x"}
    >>> bool(np.array_equal(t(item)["degraded"], t(item)["degraded"]))
    True
    """

    backend = SimulateLowDose.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | Sequence[str] = "degraded",
        dose: float = 0.25,
        kind: str = "poisson",
        counts: float = 1e4,
        clip: bool = True,
        seed: int | None = None,
        id_key: str = "item_id",
        allow_missing_keys: bool = False,
    ) -> None:
        _Paird.__init__(self, keys, output_key, allow_missing_keys)
        self.noise = SimulateLowDose(dose, kind, counts, clip)
        self.seed, self.id_key = seed, id_key
        self.set_random_state(seed)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SimulateLowDosed:
        super().set_random_state(seed, state)
        self.noise.set_random_state(state=self.R)
        return self

    def randomize(self, data: Mapping[Hashable, object]) -> None:
        """Nothing to draw ahead: the noise is drawn per key in :meth:`degrade`."""

    def degrade(self, data: Mapping[Hashable, object], key: Hashable):
        if self.seed is not None and self.id_key in data:
            self.noise.set_random_state(item_seed(self.seed, data[self.id_key], key))
        else:
            self.noise.set_random_state(state=self.R)
        return self.noise(data[key])


class Downsampled(_Paird):
    """Dictionary version of :class:`Downsample`: writes the low-resolution image to ``output_key``.

    Examples
    --------
    >>> d = Downsampled("image", factor=2, resize_back=True, mode="linear")({"image": np.ones((1, 8, 8))})
    >>> d["degraded"].shape, d["image"].shape
    ((1, 8, 8), (1, 8, 8))
    """

    backend = Downsample.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | Sequence[str] = "degraded",
        factor: int = 2,
        resize_back: bool = False,
        mode: str = "nearest",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, output_key, allow_missing_keys)
        self.downsample = Downsample(factor, resize_back, mode)

    def degrade(self, data: Mapping[Hashable, object], key: Hashable):
        return self.downsample(data[key])
