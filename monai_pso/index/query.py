"""The index queried with images: images -> exact distance to the nearest training item (calibration and the guard).

``embed_queries`` of the images (and of their extra views, :mod:`monai_pso.embed.views`), then the index's exact nearest training item per image,
lowered by the embedder's pose refinement where it refines (:func:`refined_nearest`: the ``copy`` check). Everything
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

from monai_pso.embed.base import Embedder, Embedding
from monai_pso.embed.views import QueryViews, refines_poses
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

    With an embedder that refines poses and no extra ``views`` (:func:`~monai_pso.embed.views.refines_poses`),
    the grid's exact answer is lowered where :func:`refined_nearest` comes closer.

    Parameters
    ----------
    index
        A :class:`~monai_pso.index.ReferenceIndex` (or any object with ``check_compatible`` and
        ``nearest_items``; for a refining embedder also the rest of :class:`~monai_pso.index.items.ItemQueries`).
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
    if refines_poses(embedder, views):
        found = refined_nearest(index, embedder, batch, embedding, found)
    distance = np.asarray(found.distance, dtype=np.float64)
    if distance.shape != (len(batch),) or not np.isfinite(distance).all() or (np.asarray(found.item) < 0).any():
        raise IndexIntegrityError(f"reference index returned no finite nearest distance for some of {len(batch)} images")
    return found


def refined_nearest(index: Any, embedder: Embedder, batch: np.ndarray, embedding: Embedding, found: NearestItems) -> NearestItems:
    """``found`` (the grid search's exact answer) lowered where the embedder's pose refinement comes closer.

    Per image: the query vector attaining the grid distance, its ``embedder.refine_candidates`` exact nearest
    training rows, and the image's distance to each of them after refining its pose
    (:meth:`~monai_pso.embed.aligned.AlignedEmbedder.refine`). The answer is the smaller of the grid distance and
    the refined ones (its row, item and patient with it): every refined distance is achieved by a pose of the
    image, so the answer stays an achieved distance, never above the grid's, and an image the grid search
    refuses stays refused. Called by :func:`nearest_training_items`, so the guard's decision and the
    calibration's held-out distances refine alike.

    Examples
    --------
    >>> from monai_pso.embed.aligned import AlignedEmbedder
    >>> from monai_pso.index import build_index
    >>> embedder = AlignedEmbedder(refine_steps=5)
    >>> index = build_index("phantom:2d?patients=4&acquisitions=2&size=28", embedder, progress=False)
    >>> image = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    >>> embedding = embedder.embed_queries(image)
    >>> grid = index.nearest_items(embedding)
    >>> bool((refined_nearest(index, embedder, image, embedding, grid).distance <= grid.distance).all())
    True
    """
    vectors, valid = np.asarray(embedding.vectors, np.float32), np.asarray(embedding.valid, bool)
    gaps = np.linalg.norm(vectors - index.row_vectors(found.row)[:, None, :], axis=2)
    seeds = vectors[np.arange(len(vectors)), np.where(valid, gaps, np.inf).argmin(axis=1)]  # the vector attaining the grid distance
    _, rows = index.nearest(seeds, k=embedder.refine_candidates)
    rows = np.where(rows >= 0, rows, found.row[:, None])  # an index of fewer rows than candidates
    with exact_arithmetic():
        refined = embedder.refine(torch.from_numpy(batch), embedding, index.row_vectors(rows))
    best = refined.argmin(axis=1)
    distance, row = refined[np.arange(len(rows)), best], rows[np.arange(len(rows)), best]
    closer = distance < found.distance
    if not closer.any():
        return found
    rows_now = np.where(closer, row, found.row)
    items = index.item_of_rows(rows_now)
    return NearestItems(
        distance=np.where(closer, distance, found.distance),
        item=items,
        item_id=[index.item_ids[i] for i in items],
        patient_id=[index.patient_ids[i] for i in items],
        row=rows_now,
    )
