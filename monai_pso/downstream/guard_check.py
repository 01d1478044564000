"""Independent brute-force re-check of a synthetic set against the training images: no image within tau.

Every synthetic image is compared with every training image (no index, no pruning), in float64 numpy.
With a guard's checks (:func:`recheck_with_guard`) each check is re-run as the guard measures it: the
check's own embedder, its threshold's query views (translations, turns, intensity changes undone,
:class:`~monai_pso.embed.views.QueryViews`) and its tau; the training images are re-embedded here
rather than read from the guard's index, so a fault of the index (pruning, stored vectors) cannot hide
a violation. The distance is that of :mod:`monai_pso.embed` (Euclidean between embedding vectors, the
minimum over the query image's valid vectors of every view and the reference image's valid vectors,
lowered by the embedder's pose refinement where the guard refines: the ``copy`` check,
:func:`~monai_pso.index.query.refined_nearest`, here against the brute force's own nearest rows); without an embedder, the root-mean-square pixel difference of the two images in ``[0, 1]`` (the
``pixel`` embedder without resampling), of every view when views are given.

Squared distances are expanded (``|q|^2 + |r|^2 - 2 q.r``) to find each query vector's nearest training
vector, and the distance to that vector is then recomputed directly, so the reported value is exact
to float64 rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from monai_pso.embed.views import QueryViews, refines_poses

#: Entries of one block of the query-by-training distance matrix (float64): about 160 MB.
BLOCK_ENTRIES = 20_000_000


def _batches(images: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(images), size):
        yield start, images[start : start + size]


def _pixel_rows(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    return flat / np.sqrt(flat.shape[1])


def _reference_rows(training: np.ndarray, embedder: Any | None, batch_size: int) -> np.ndarray:
    """The training images' valid reference-side vectors ``(M_rows, D)`` float64 (re-embedded, never from an index)."""
    if embedder is None:
        return _pixel_rows(training)
    rows = []
    with torch.no_grad():
        for _, batch in _batches(training, batch_size):
            rows.append(embedder.embed(batch).rows().astype(np.float64))
    return np.concatenate(rows)


def _query_rows(batch: np.ndarray, embedder: Any | None, views: QueryViews) -> tuple[np.ndarray, np.ndarray]:
    """``(rows (N, D) float64, owner (N,))``: the valid query-side vectors of every view of ``batch``."""
    if embedder is None:
        tensor = torch.from_numpy(batch)
        parts = [_pixel_rows(view.numpy()) for view in views.images(tensor)]
        return np.concatenate(parts), np.tile(np.arange(len(batch)), len(parts))
    with torch.no_grad():
        embedding = views.embed(embedder, torch.from_numpy(batch))
    return embedding.rows().astype(np.float64), embedding.row_owner()


def _nearest_rows(queries: np.ndarray, references: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per query row, the exact float64 distance to its nearest reference row and the ``(N, k)`` rows nearest
    it, nearest first (brute force, in blocks)."""
    reference_norms = np.einsum("ij,ij->i", references, references)
    block = max(1, BLOCK_ENTRIES // max(1, len(references)))
    best, nearest = np.empty(len(queries)), np.empty((len(queries), min(k, len(references))), np.int64)
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        squared = np.einsum("ij,ij->i", q, q)[:, None] + reference_norms[None] - 2.0 * (q @ references.T)
        order = np.argsort(squared, axis=1, kind="stable")[:, : nearest.shape[1]]
        nearest[start : start + block] = order
        best[start : start + block] = np.sqrt(((q - references[order[:, 0]]) ** 2).sum(axis=1))
    return best, nearest


def _refined_distances(batch: np.ndarray, embedder: Any, references: np.ndarray) -> np.ndarray:
    """Per image: its grid distance lowered by the embedder's pose refinement against the ``refine_candidates``
    reference rows nearest the query vector attaining the grid distance (as the guard's index does)."""
    with torch.no_grad():
        embedding = embedder.embed_queries(torch.from_numpy(batch))
    vectors, valid = np.asarray(embedding.vectors, np.float64), np.asarray(embedding.valid, bool)
    distances, nearest = _nearest_rows(vectors.reshape(-1, vectors.shape[-1]), references)
    distances = np.where(valid, distances.reshape(valid.shape), np.inf)
    seeds = vectors[np.arange(len(batch)), distances.argmin(axis=1)]
    _, candidates = _nearest_rows(seeds, references, k=embedder.refine_candidates)
    refined = embedder.refine(torch.from_numpy(batch), embedding, references[candidates])
    return np.minimum(distances.min(axis=1), refined.min(axis=1))


def nearest_training_distances(
    synthetic: np.ndarray,
    training: np.ndarray,
    embedder: Any | None = None,
    chunk: int = 64,
    views: QueryViews | None = None,
) -> np.ndarray:
    """For every synthetic image, the distance to the closest training image (brute force, float64).

    Parameters
    ----------
    synthetic, training
        ``(N, 1, *spatial)`` and ``(M, 1, *spatial)`` images in ``[0, 1]``.
    embedder
        Optional :class:`monai_pso.embed.base.Embedder`; ``None`` means RMS pixel difference.
    chunk
        Synthetic (and training) images embedded at a time.
    views
        Query-side views of each synthetic image (the guard's threshold's :attr:`~monai_pso.calibrate.Threshold.views`);
        ``None``: the image only (with the embedder's own query-side flips).

    Examples
    --------
    >>> train = np.zeros((3, 1, 4, 4)); synth = np.full((2, 1, 4, 4), 0.5)
    >>> nearest_training_distances(synth, train).tolist()
    [0.5, 0.5]
    >>> shifted = np.zeros((1, 1, 6, 6), np.float32); shifted[0, 0, 2, 3] = 1.0
    >>> source = np.zeros((1, 1, 6, 6), np.float32); source[0, 0, 2, 2] = 1.0
    >>> nearest_training_distances(shifted, source).item() > 0, nearest_training_distances(shifted, source, views=QueryViews(max_shift=1)).item()
    (True, 0.0)
    """
    synthetic = np.asarray(synthetic, np.float32)
    views = views or QueryViews()
    references = _reference_rows(np.asarray(training, np.float32), embedder, chunk)
    best = np.full(len(synthetic), np.inf)
    for start, batch in _batches(synthetic, chunk):
        if refines_poses(embedder, views):
            best[start : start + len(batch)] = _refined_distances(batch, embedder, references)
            continue
        rows, owner = _query_rows(batch, embedder, views)
        np.minimum.at(best, start + owner, _nearest_rows(rows, references)[0])
    return best


def verify_no_image_within(
    synthetic: np.ndarray,
    training: np.ndarray,
    tau: float,
    embedder: Any | None = None,
    item_ids: Sequence[str] | None = None,
    views: QueryViews | None = None,
) -> dict[str, Any]:
    """Count synthetic images closer than ``tau`` to a training image (``distance < tau`` is a violation).

    ``embedder`` and ``views`` as in :func:`nearest_training_distances`; ``item_ids`` name the synthetic
    images in ``violating_items`` (the first 20).

    Examples
    --------
    >>> out = verify_no_image_within(np.full((2, 1, 4, 4), 0.5), np.zeros((3, 1, 4, 4)), tau=0.4)
    >>> out["violations"], out["min_distance"]
    (0, 0.5)
    """
    return _verified(synthetic, training, tau, embedder, item_ids, views)[0]


def _verified(synthetic, training, tau, embedder, item_ids, views) -> tuple[dict[str, Any], np.ndarray]:
    views = views or QueryViews()
    distances = nearest_training_distances(synthetic, training, embedder, views=views)
    close = np.flatnonzero(distances < tau)
    result = {
        "method": "brute force, float64, every synthetic image (every query view) against every training image, re-embedded",
        "distance": "embedder vectors" if embedder is not None else "RMS pixel difference in [0, 1]",
        "query_views": views.to_dict(),
        "tau": float(tau),
        "n_synthetic": int(len(synthetic)),
        "n_training": int(len(training)),
        "violations": int(len(close)),
        "violating_items": [str(item_ids[i]) if item_ids is not None else int(i) for i in close[:20]],
        "min_distance": float(distances.min()) if len(distances) else float("nan"),
        "median_distance": float(np.median(distances)) if len(distances) else float("nan"),
    }
    return result, close


def check_views(check: Any) -> QueryViews:
    """The query views a guard check measures with: its threshold's (a :class:`~monai_pso.guard.checker.GuardCheck`), or its ``views``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_views(SimpleNamespace(views={"max_shift": 2})), check_views(SimpleNamespace())
    (QueryViews(max_shift=2, rotations=(), intensity=()), QueryViews(max_shift=0, rotations=(), intensity=()))
    """
    threshold = getattr(check, "threshold", None)
    if threshold is not None and hasattr(threshold, "views"):
        return threshold.views
    views = getattr(check, "views", None)
    if isinstance(views, dict):
        return QueryViews.from_dict(views)
    return views if isinstance(views, QueryViews) else QueryViews()


def recheck_with_guard(synthetic: np.ndarray, training: np.ndarray, checks: Any, item_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Re-run every check of a guard by brute force: its embedder, its query views, its tau.

    Parameters
    ----------
    synthetic, training
        ``(N, 1, *spatial)`` and ``(M, 1, *spatial)`` images in ``[0, 1]`` (the training images the guard indexed).
    checks
        A :class:`~monai_pso.guard.checker.PrivacyChecker`, its :class:`~monai_pso.guard.checker.GuardCheck` list,
        or objects with ``name``, ``embedder``, ``tau`` and ``views`` (:class:`~monai_pso.downstream.synthetic.GuardCheckSpec`).
    item_ids
        Names of the synthetic images, for the report.

    Returns
    -------
    dict
        The first check's result, with ``violations`` and ``violating_items`` over all checks (an image
        violates when it lies within tau of a training image in *any* check, as the guard releases only
        images passing every check) and ``checks``: each check's own result.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> train = np.pad(np.random.default_rng(0).random((4, 1, 6, 6)), ((0, 0), (0, 0), (2, 2), (2, 2))).astype(np.float32)
    >>> moved = np.roll(train[:1], 1, axis=-1)  # a training image shifted by one pixel
    >>> plain = SimpleNamespace(name="plain", embedder=None, tau=0.05, views=None)
    >>> viewed = SimpleNamespace(name="views", embedder=None, tau=0.05, views=QueryViews(max_shift=1))
    >>> out = recheck_with_guard(moved, train, [plain, viewed])
    >>> out["checks"]["plain"]["violations"], out["checks"]["views"]["violations"], out["violations"]
    (0, 1, 1)
    """
    checks = list(getattr(checks, "checks", checks))
    synthetic, training = np.asarray(synthetic, np.float32), np.asarray(training, np.float32)
    per_check, violating = {}, np.zeros(len(synthetic), bool)
    for check in checks:
        result, close = _verified(synthetic, training, float(check.tau), check.embedder, item_ids, check_views(check))
        known = getattr(getattr(check, "threshold", None), "views", None) is not None or getattr(check, "views", None) is not None
        result["views_from"] = "the check's threshold" if known else "none given: the image alone (the check carries no query views)"
        violating[close] = True
        index = getattr(check, "index", None)
        if index is not None and hasattr(index, "n_items"):
            result["n_index_items"] = int(index.n_items)
        per_check[check.name] = result
    close = np.flatnonzero(violating)
    primary = per_check[checks[0].name]
    return primary | {
        "violations": int(len(close)),
        "violating_items": [str(item_ids[i]) if item_ids is not None else int(i) for i in close[:20]],
        "checks": per_check,
    }
