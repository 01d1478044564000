"""Near-copies of training images, made independently of the guard (scipy.ndimage, PIL and numpy only).

Nothing here uses the guard's views or its training augmentations: every family is written again with
other code and its own parameter draws, each magnitude drawn at random per copy from a range at least as
wide as the target of issue 12 (shifts up to about 10% of the field of view, turns up to about 10
degrees, zoom and crop-and-resize up to +-10%...). :data:`FAMILIES` maps each family to a function
``(image, rng, canvas) -> copy``: ``image`` is a training image ``(*spatial)`` in ``[0, 1]`` (2D or 3D),
``canvas`` an image of another patient (used by ``paste`` only), and the copy has the image's shape.
``benchmarks/copy_recall.py`` and ``tests/test_copy_check.py`` both use it.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> image = rng.random((28, 28)); canvas = rng.random((28, 28))
>>> sorted(FAMILIES)[:4], all(FAMILIES[f](image, rng, canvas).shape == (28, 28) for f in FAMILIES)
(['blur', 'combined', 'contrast', 'crop_resize'], True)
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from scipy import ndimage

#: The widest magnitudes drawn (each copy draws its own, uniformly, unless said otherwise).
RANGES = {
    "shift": 0.12,  # of the side, per axis
    "rotate": 12.0,  # degrees
    "zoom": 0.12,  # relative, in or out
    "crop": 0.12,  # share of each side cut away, then resized back
    "blur": (0.5, 1.6),  # Gaussian sigma, pixels
    "gamma": 2.0,  # log-uniform in [1/2, 2]
    "contrast": (0.6, 1.4),  # gain about the mean, plus an offset in [-0.1, 0.1]
    "noise": (0.01, 0.06),  # Gaussian standard deviation
    "elastic": (0.02, 0.05),  # largest displacement, share of the side
    "levels": (5, 16),  # grey levels kept
    "jpeg": (25, 70),  # JPEG quality (2D)
    "paste": (0.5, 0.7),  # side of the pasted box, share of each side (area >= 1/4 in 2D)
}


def _fill(rng: np.random.Generator) -> tuple[str, float]:
    return ("nearest", 0.0) if rng.random() < 0.5 else ("constant", 0.0)


def shift(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Moved by up to ``RANGES['shift']`` of the side along every axis (sub-pixel, linear)."""
    offsets = rng.uniform(-RANGES["shift"], RANGES["shift"], image.ndim) * np.array(image.shape)
    mode, cval = _fill(rng)
    return ndimage.shift(image, offsets, order=1, mode=mode, cval=cval)


def rotate(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Turned by up to ``RANGES['rotate']`` degrees (in a random plane of a volume)."""
    axes = (0, 1) if image.ndim == 2 else tuple(rng.choice(3, 2, replace=False))
    mode, cval = _fill(rng)
    return ndimage.rotate(image, rng.uniform(-RANGES["rotate"], RANGES["rotate"]), axes=axes, reshape=False, order=1, mode=mode, cval=cval)


def _affine(image: np.ndarray, matrix: np.ndarray, rng: np.random.Generator, offset: np.ndarray | None = None) -> np.ndarray:
    """``image`` sampled at ``matrix @ (x - centre) + centre + offset`` (linear)."""
    centre = (np.array(image.shape) - 1) / 2.0
    offset = np.zeros(image.ndim) if offset is None else offset
    mode, cval = _fill(rng)
    return ndimage.affine_transform(image, matrix, offset=centre - matrix @ centre + offset, order=1, mode=mode, cval=cval)


def zoom(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Zoomed in or out about the centre by up to ``RANGES['zoom']``."""
    factor = 1.0 + rng.uniform(-RANGES["zoom"], RANGES["zoom"])
    return _affine(image, np.eye(image.ndim) / factor, rng)


def crop_resize(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """A crop keeping ``1 - U(0, RANGES['crop'])`` of each side (its own per axis), at a random place, resized back."""
    keep = 1.0 - rng.uniform(0.0, RANGES["crop"], image.ndim)
    start = rng.uniform(0.0, 1.0 - keep) * np.array(image.shape)
    centre = (np.array(image.shape) - 1) / 2.0
    return _affine(image, np.diag(keep), rng, offset=start - centre * (1.0 - keep))


def blur(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Gaussian blur, sigma drawn from ``RANGES['blur']`` pixels."""
    return ndimage.gaussian_filter(image, rng.uniform(*RANGES["blur"]), mode="nearest")


def gamma(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """``v ** g``, ``g`` log-uniform in ``[1 / RANGES['gamma'], RANGES['gamma']]``."""
    return np.clip(image, 0.0, 1.0) ** np.exp(rng.uniform(-1.0, 1.0) * np.log(RANGES["gamma"]))


def contrast(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Contrast about the mean times a gain from ``RANGES['contrast']``, plus an offset in ``[-0.1, 0.1]``."""
    mean = image.mean()
    return (image - mean) * rng.uniform(*RANGES["contrast"]) + mean + rng.uniform(-0.1, 0.1)


def noise(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Gaussian noise, standard deviation drawn from ``RANGES['noise']``."""
    return image + rng.normal(0.0, rng.uniform(*RANGES["noise"]), image.shape)


def mirror(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Mirrored left-right (the last axis in 2D, the first in 3D), then moved by up to 5% of the side."""
    flipped = np.flip(image, axis=-1 if image.ndim == 2 else 0)
    offsets = rng.uniform(-0.05, 0.05, image.ndim) * np.array(image.shape)
    return ndimage.shift(flipped, offsets, order=1, mode="nearest")


def elastic(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """A smooth random displacement field (Gaussian-filtered noise, scale a quarter of the side), largest displacement from ``RANGES['elastic']``."""
    shape = np.array(image.shape)
    fields = [ndimage.gaussian_filter(rng.normal(size=image.shape), shape.min() / 8.0, mode="wrap") for _ in shape]
    largest = max(np.abs(f).max() for f in fields)
    scale = rng.uniform(*RANGES["elastic"]) * shape.min() / largest
    coordinates = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return ndimage.map_coordinates(image, [c + f * scale for c, f in zip(coordinates, fields)], order=1, mode="nearest")


def quantise(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Rounded to ``L`` grey levels, ``L`` drawn from ``RANGES['levels']``."""
    levels = int(rng.integers(RANGES["levels"][0], RANGES["levels"][1] + 1))
    return np.round(np.clip(image, 0.0, 1.0) * (levels - 1)) / (levels - 1)


def jpeg(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """JPEG-compressed at a quality from ``RANGES['jpeg']`` (2D; each slice of a volume along its first axis)."""
    from PIL import Image

    quality = int(rng.integers(*RANGES["jpeg"]))

    def one(plane: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.round(np.clip(plane, 0, 1) * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64) / 255.0

    return one(image) if image.ndim == 2 else np.stack([one(p) for p in image])


def combined(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """Half-magnitude shift, turn and zoom, then gamma in ``[0.8, 1.25]`` and noise of 0.02."""
    offsets = rng.uniform(-0.06, 0.06, image.ndim) * np.array(image.shape)
    turned = ndimage.rotate(image, rng.uniform(-6.0, 6.0), axes=(image.ndim - 2, image.ndim - 1), reshape=False, order=1, mode="nearest")
    moved = _affine(turned, np.eye(image.ndim) / (1.0 + rng.uniform(-0.06, 0.06)), rng, offset=offsets)
    return np.clip(moved, 0.0, 1.0) ** np.exp(rng.uniform(-1.0, 1.0) * np.log(1.25)) + rng.normal(0.0, 0.02, image.shape)


def paste(image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray | None = None) -> np.ndarray:
    """A box of ``image`` (each side a share ``RANGES['paste']`` of the image's; in 2D at least a quarter of its area) pasted at a random place on ``canvas``.

    The box is taken where at least half its pixels are brighter than 0.05 (a blank corner identifies
    no one): the first of 50 random places that qualifies, else the most foreground one tried.
    """
    shape = np.array(image.shape)
    side = np.round(rng.uniform(*RANGES["paste"], image.ndim) * shape).astype(int)
    places = [np.array([rng.integers(0, n - s + 1) for n, s in zip(shape, side)]) for _ in range(50)]
    share = [float((image[tuple(slice(p, p + s) for p, s in zip(place, side))] > 0.05).mean()) for place in places]
    source = places[next((i for i, v in enumerate(share) if v >= 0.5), int(np.argmax(share)))]
    target = [rng.integers(0, n - s + 1) for n, s in zip(shape, side)]
    result = np.array(canvas, dtype=np.float64, copy=True)
    result[tuple(slice(t, t + s) for t, s in zip(target, side))] = image[tuple(slice(p, p + s) for p, s in zip(source, side))]
    return result


#: Every family, by name.
FAMILIES: dict[str, Callable[..., np.ndarray]] = {
    f.__name__: f for f in (shift, rotate, zoom, crop_resize, blur, gamma, contrast, noise, mirror, elastic, quantise, jpeg, combined, paste)
}


def near_copy(family: str, image: np.ndarray, rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """One near-copy of ``image`` (``(*spatial)`` in ``[0, 1]``) of ``family``, clipped to ``[0, 1]``, float32."""
    return np.clip(FAMILIES[family](np.asarray(image, np.float64), rng, np.asarray(canvas, np.float64)), 0.0, 1.0).astype(np.float32)
