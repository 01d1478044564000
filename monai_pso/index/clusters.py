"""k-means partition of reference rows, laid out so that a cluster is a contiguous, sorted slice.

Rows are reordered cluster by cluster; inside a cluster they are sorted by their float64 distance to
the (float32) centroid. A cluster is then described by ``offsets[c]:offsets[c + 1]`` and the sorted
``member_dist`` of its rows, whose last value is the cluster radius. The partition only has to be *some*
partition: k-means quality changes the speed of pruned search, never its answers, because radii and
member distances are measured afterwards, in float64, for the rows as assigned.

Examples
--------
>>> x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
>>> x[5:] += 100
>>> layout = cluster_rows(x, n_clusters=2, seed=0)
>>> layout.offsets.tolist(), bool(layout.member_dist.max() < 5)
([0, 5, 10], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Rows assigned to their centroid per faiss call.
_ASSIGN_CHUNK = 1 << 16

#: Upper limit of the automatic number of clusters per shard.
MAX_AUTO_CLUSTERS = 4096


def default_cluster_count(n_rows: int) -> int:
    """``round(sqrt(n_rows))`` clusters, at least 1 and at most :data:`MAX_AUTO_CLUSTERS`.

    Examples
    --------
    >>> default_cluster_count(10_000), default_cluster_count(3)
    (100, 2)
    """
    return int(min(MAX_AUTO_CLUSTERS, max(1, round(math.sqrt(n_rows)))))


@dataclass
class ClusterLayout:
    """A partition of rows into clusters, as a reordering.

    Parameters
    ----------
    order
        ``(N,)`` int64: ``order[j]`` is the original position of the row placed at ``j``.
    centroids
        ``(K, D)`` float32 centroid of each non-empty cluster.
    offsets
        ``(K + 1,)`` int64: cluster ``c`` holds placed rows ``offsets[c]:offsets[c + 1]``.
    member_dist
        ``(N,)`` float64 canonical distance of each placed row to its centroid, ascending within a cluster.
    """

    order: np.ndarray
    centroids: np.ndarray
    offsets: np.ndarray
    member_dist: np.ndarray


def _train_centroids(vectors: np.ndarray, n_clusters: int, seed: int, niter: int, max_points_per_centroid: int) -> np.ndarray:
    if n_clusters == 1:
        return np.mean(vectors, axis=0, dtype=np.float64)[None, :].astype(np.float32)
    import faiss

    kmeans = faiss.Kmeans(
        vectors.shape[1],
        n_clusters,
        niter=niter,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max_points_per_centroid,
    )
    kmeans.train(vectors)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def _assign(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row (float32 search) and the float64 distance to it."""
    import faiss

    assignment = np.empty(len(vectors), np.int64)
    distance = np.empty(len(vectors), np.float64)
    centroids64 = centroids.astype(np.float64)
    for start in range(0, len(vectors), _ASSIGN_CHUNK):
        block = np.ascontiguousarray(vectors[start : start + _ASSIGN_CHUNK], dtype=np.float32)
        _, nearest = faiss.knn(block, centroids, 1)
        nearest = nearest[:, 0].astype(np.int64)
        assignment[start : start + len(block)] = nearest
        distance[start : start + len(block)] = _centroid_distances(block, centroids64, nearest)
    return assignment, distance


def _centroid_distances(block: np.ndarray, centroids64: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Float64 distance of each row of ``block`` to ``centroids64[cluster]`` (the layout's ``member_dist``)."""
    diff = np.asarray(block, np.float64) - centroids64[cluster]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def member_distances(vectors: np.ndarray, centroids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Float64 canonical distance of each (cluster-ordered) row to the centroid of its cluster.

    The same arithmetic as the layout's ``member_dist``; used to check a loaded layout against its vectors.

    Examples
    --------
    >>> x = np.array([[0, 0], [3, 4], [10, 0]], np.float32)
    >>> member_distances(x, np.array([[0, 0], [10, 1]], np.float32), np.array([0, 2, 3])).tolist()
    [0.0, 5.0, 1.0]
    """
    out = np.empty(len(vectors), np.float64)
    cluster = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    centroids64 = np.asarray(centroids, np.float64)
    step = max(1, (1 << 22) // max(1, vectors.shape[1]))  # two (step, D) float64 temporaries of 32 MiB
    for start in range(0, len(vectors), step):
        block = vectors[start : start + step]
        out[start : start + len(block)] = _centroid_distances(block, centroids64, cluster[start : start + len(block)])
    return out


def cluster_rows(
    vectors: np.ndarray,
    n_clusters: int | None = None,
    seed: int = 0,
    niter: int = 10,
    max_points_per_centroid: int = 64,
) -> ClusterLayout:
    """Partition ``vectors`` with faiss k-means and lay the clusters out contiguously.

    Parameters
    ----------
    vectors
        ``(N, D)`` float32 rows (``N >= 1``); a memory map is read in chunks.
    n_clusters
        Number of k-means clusters; ``None`` uses :func:`default_cluster_count`. Clusters left empty
        are dropped, so the layout may hold fewer.
    seed, niter, max_points_per_centroid
        faiss k-means settings (training uses at most ``n_clusters * max_points_per_centroid`` rows).

    Examples
    --------
    >>> layout = cluster_rows(np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32), 3)
    >>> int(layout.offsets[-1]), len(layout.centroids) <= 3
    (50, True)
    """
    n_rows = len(vectors)
    k = min(n_rows, n_clusters if n_clusters is not None else default_cluster_count(n_rows))
    centroids = _train_centroids(vectors, max(1, k), seed, niter, max_points_per_centroid)
    assignment, distance = _assign(vectors, centroids)
    used, assignment = np.unique(assignment, return_inverse=True)
    order = np.lexsort((distance, assignment))
    counts = np.bincount(assignment, minlength=len(used))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ClusterLayout(order.astype(np.int64), centroids[used], offsets, distance[order])
