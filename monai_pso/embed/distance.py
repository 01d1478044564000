"""Image-to-image distances from embeddings, by brute force (small sets: tests, validation, reports).

The distance between a query image and a reference image is the smallest Euclidean distance
between a valid query vector and a valid reference vector, computed in float64. The reference index
(:mod:`monai_pso.index`) answers the same question at scale.

Examples
--------
>>> from monai_pso.embed.base import Embedding
>>> q = Embedding.single(np.array([[0.0, 0.0]], np.float32))
>>> r = Embedding.single(np.array([[3.0, 4.0], [0.0, 1.0]], np.float32))
>>> image_distances(q, r).tolist()
[[5.0, 1.0]]
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from monai_pso.embed.base import Embedding


def image_distances(queries: Embedding, references: Embedding) -> np.ndarray:
    """``(len(queries), len(references))`` float64: per pair of images, the closest pair of valid vectors."""
    rows = cdist(queries.rows().astype(np.float64), references.rows().astype(np.float64))
    per_query = np.full((len(queries), rows.shape[1]), np.inf)
    np.minimum.at(per_query, queries.row_owner(), rows)
    result = np.full((len(queries), len(references)), np.inf)
    np.minimum.at(result.T, references.row_owner(), per_query.T)
    return result
