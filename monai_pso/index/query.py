"""The index queried with images: images -> exact distance to the nearest training item (calibration and the guard).

``embed_queries`` of the images (and of their extra views, :mod:`monai_pso.embed.views`), then the index's exact nearest training item per image. Everything
that could make the answer meaningless is refused here, before any decision is taken from it: a batch
that is not ``(B, 1, *spatial)``, NaN / Inf values, values outside ``[0, 1]`` (the embedders would clip
them silently, so the distance would belong to another image than the one released), a spatial shape
or dimensionality the index was not built for, an embedder other than the index's, and a non-finite
or missing distance in the answer.

The query side is embedded inside :func:`~monai_pso.index.backends.exact_arithmetic` (torch autocast off,
full float32 products), as the reference side is by :func:`~monai_pso.index.build_index`: a caller's
autocast region (a mixed-precision sampling loop) changes neither the embedding nor the distance.

Examples
--------
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> from monai_pso.index import build_index
>>> embedder = PixelEmbedder(grid=8)
>>> index = build_index("phantom:2d?patients=4&acquisitions=2&size=16", embedder, progress=False)
>>> image = np.zeros((1, 1, 16, 16), np.float32)
>>> nearest_training_items(index, embedder, image).distance.shape
(1,)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from monai_pso.embed.base import Embedder
from monai_pso.embed.views import QueryViews
from monai_pso.errors import ImageValueError, IndexIntegrityError
from monai_pso.index.backends import exact_arithmetic
from monai_pso.index.items import NearestItems


def check_image_batch(images: torch.Tensor | np.ndarray, index: Any) -> np.ndarray:
    """``images`` as float32 ``(B, 1, *spatial)`` after the guard's checks (see the module docstring).

    Examples
    --------
    >>> check_image_batch(np.full((1, 1, 4, 4), 2.0), None)
    Traceback (most recent call last):
    ...
    monai_pso.errors.ImageValueError: images: values must lie in [0, 1] (found 2 .. 2); clip or rescale them before the privacy guard
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    batch = np.asarray(images)
    if batch.dtype == object or not (np.issubdtype(batch.dtype, np.floating) or np.issubdtype(batch.dtype, np.integer)):
        raise ImageValueError(f"images: expected a numeric array, got dtype {batch.dtype}")
    batch = batch.astype(np.float32, copy=False)
    if batch.ndim not in (4, 5) or batch.shape[1] != 1 or batch.shape[0] == 0:
        raise ImageValueError(f"images: expected a non-empty batch (B, 1, *spatial) with 2 or 3 spatial axes, got shape {batch.shape}")
    if not np.isfinite(batch).all():
        raise ImageValueError("images: contain NaN or Inf values")
    low, high = float(batch.min()), float(batch.max())
    if low < 0.0 or high > 1.0:
        raise ImageValueError(f"images: values must lie in [0, 1] (found {low:.4g} .. {high:.4g}); clip or rescale them before the privacy guard")
    if index is not None:
        index.check_compatible(batch.shape[2:])
    return batch


def nearest_training_items(index: Any, embedder: Embedder, images: torch.Tensor | np.ndarray, views: QueryViews | None = None) -> NearestItems:
    """Per image of the batch: the exact distance to the nearest training image, and which one it is.

    Parameters
    ----------
    index
        A :class:`~monai_pso.index.ReferenceIndex` (or any object with ``check_compatible`` and
        ``nearest_items``).
    embedder
        The embedder that built ``index``; its query side (:meth:`~monai_pso.embed.base.Embedder.embed_queries`)
        embeds ``images``.
    images
        ``(B, 1, *spatial)`` in ``[0, 1]``.
    views
        Extra query-side views (:class:`~monai_pso.embed.views.QueryViews`); ``None``: the image only.

    Raises
    ------
    ImageValueError
        Bad images (see the module docstring).
    IndexIntegrityError
        The index returned no finite distance for some image.
    """
    batch = check_image_batch(images, index)
    with torch.no_grad(), exact_arithmetic():  # the embedding the threshold was calibrated in, whatever autocast is on
        embedding = (views or QueryViews()).embed(embedder, torch.from_numpy(batch))
    found = index.nearest_items(embedding)
    distance = np.asarray(found.distance, dtype=np.float64)
    if distance.shape != (len(batch),) or not np.isfinite(distance).all() or (np.asarray(found.item) < 0).any():
        raise IndexIntegrityError(f"reference index returned no finite nearest distance for some of {len(batch)} images")
    return found
