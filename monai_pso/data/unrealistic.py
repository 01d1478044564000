"""Images that look like no real data: stand-ins for a generator's failures, to test fidelity measures.

Three kinds, each image drawn with its own random parameters so that a test cannot be passed by undoing
one fixed corruption:

- ``blobs``: smooth random fields (Gaussian-filtered noise, ``sigma`` 8-20% of the side), rescaled to
  ``[0, c]`` with ``c`` in ``[0.5, 1]``: what an undertrained diffusion model emits (issue 14);
- ``noise``: Gaussian noise (mean 0.2-0.7, standard deviation 0.1-0.4), clipped to ``[0, 1]``;
- ``blurred``: the given real images, Gaussian-blurred with ``sigma`` 10-20% of the side.

Examples
--------
>>> real = np.random.default_rng(0).random((3, 1, 16, 16)).astype(np.float32)
>>> fakes = unrealistic_images(real, "blobs", np.random.default_rng(1))
>>> fakes.shape, fakes.dtype, bool(fakes.min() >= 0.0 and fakes.max() <= 1.0)
((3, 1, 16, 16), dtype('float32'), True)
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from monai_pso.errors import ConfigurationError

#: The kinds :func:`unrealistic_images` draws.
KINDS = ("blobs", "noise", "blurred")


def unrealistic_images(real: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One unrealistic image per image of ``real`` (``(N, 1, *spatial)`` in ``[0, 1]``), float32, same shape.

    Parameters
    ----------
    real
        Real images; ``blurred`` blurs them, the other kinds only take their shape.
    kind
        One of :data:`KINDS`.
    rng
        Draws each image's parameters (and the blobs' and noise's values).
    """
    if kind not in KINDS:
        raise ConfigurationError(f"kind={kind!r}: must be one of {', '.join(KINDS)}")
    out = []
    for image in np.asarray(real, np.float32):
        if kind == "blobs":
            field = gaussian_filter(rng.random(image.shape), sigma=_sigma(image, rng.uniform(0.08, 0.2)))
            out.append((field - field.min()) / max(float(field.max() - field.min()), 1e-12) * rng.uniform(0.5, 1.0))
        elif kind == "noise":
            out.append(np.clip(rng.normal(rng.uniform(0.2, 0.7), rng.uniform(0.1, 0.4), image.shape), 0.0, 1.0))
        else:
            out.append(gaussian_filter(image, sigma=_sigma(image, rng.uniform(0.1, 0.2))))
    return np.stack(out).astype(np.float32)


def _sigma(image: np.ndarray, fraction: float) -> list[float]:
    """Gaussian widths for a ``(1, *spatial)`` image: ``fraction`` of its longest side on every spatial axis, none across the channel."""
    return [0.0] + [fraction * max(image.shape[1:])] * (image.ndim - 1)
