"""Independent brute-force check of a synthetic set against the training images: no image within tau.

Every synthetic image is compared with every training image (no index, no pruning), in float64. The
distance is that of :mod:`monai_pso.embed` (Euclidean between embedding vectors, minimum over the query
image's valid vectors and the reference image's valid vectors) when an embedder is given, else the
root-mean-square pixel difference of the two images in ``[0, 1]`` (the ``pixel`` embedder without resampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _vectors(images: np.ndarray, embedder: Any | None, queries: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(rows (N, D) float64, owner (N,))`` of the images' valid vectors."""
    if embedder is None:
        flat = images.reshape(len(images), -1).astype(np.float64)
        return flat / np.sqrt(flat.shape[1]), np.arange(len(images))
    embedding = embedder.embed_queries(images) if queries else embedder.embed(images)
    return embedding.rows().astype(np.float64), embedding.row_owner()


def nearest_training_distances(synthetic: np.ndarray, training: np.ndarray, embedder: Any | None = None, chunk: int = 256) -> np.ndarray:
    """For every synthetic image, the distance to the closest training image (brute force, float64).

    Parameters
    ----------
    synthetic, training
        ``(N, 1, *spatial)`` and ``(M, 1, *spatial)`` images in ``[0, 1]``.
    embedder
        Optional :class:`monai_pso.embed.base.Embedder`; ``None`` means RMS pixel difference.

    Examples
    --------
    >>> train = np.zeros((3, 1, 4, 4)); synth = np.full((2, 1, 4, 4), 0.5)
    >>> nearest_training_distances(synth, train).tolist()
    [0.5, 0.5]
    """
    q_rows, q_owner = _vectors(np.asarray(synthetic, np.float32), embedder, queries=True)
    r_rows, _ = _vectors(np.asarray(training, np.float32), embedder, queries=False)
    refs = torch.as_tensor(r_rows, dtype=torch.float64)
    best_row = np.empty(len(q_rows))
    for start in range(0, len(q_rows), chunk):
        block = torch.as_tensor(q_rows[start : start + chunk], dtype=torch.float64)
        best_row[start : start + chunk] = torch.cdist(block, refs).min(dim=1).values.numpy()
    best = np.full(len(synthetic), np.inf)
    np.minimum.at(best, q_owner, best_row)
    return best


def verify_no_image_within(synthetic: np.ndarray, training: np.ndarray, tau: float, embedder: Any | None = None, item_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Count synthetic images closer than ``tau`` to a training image (``distance < tau`` is a violation).

    Examples
    --------
    >>> out = verify_no_image_within(np.full((2, 1, 4, 4), 0.5), np.zeros((3, 1, 4, 4)), tau=0.4)
    >>> out["violations"], out["min_distance"]
    (0, 0.5)
    """
    distances = nearest_training_distances(synthetic, training, embedder)
    close = np.flatnonzero(distances < tau)
    return {
        "method": "brute force, float64, every synthetic image against every training image",
        "distance": "embedder vectors" if embedder is not None else "RMS pixel difference in [0, 1]",
        "tau": float(tau),
        "n_synthetic": int(len(synthetic)),
        "n_training": int(len(training)),
        "violations": int(len(close)),
        "violating_items": [str(item_ids[i]) if item_ids is not None else int(i) for i in close[:20]],
        "min_distance": float(distances.min()) if len(distances) else float("nan"),
        "median_distance": float(np.median(distances)) if len(distances) else float("nan"),
    }
