"""The guard's question on groups of query vectors: per image, the nearest reference over all its vectors.

An image reaches the guard as many query vectors (every view of :class:`~monai_pso.embed.views.QueryViews`
times the embedder's flips and tiles); its distance to the training set is the smallest canonical
distance over all of them, ties broken by the smaller global row. The vectors of one image lie close to
each other (a view moves the image by a pixel or a few degrees), so most of them need not be searched on
their own:

- :class:`ViewGroups` covers each image's vectors with a few *pivots* (farthest-first, each vector joins
  its nearest pivot); ``reach[v]`` is a padded upper bound of the distance from vector ``v`` to its
  pivot;
- :class:`NearestPerImage` holds each image's best canonical distance so far (an achieved one) and its row:
  one radius shared by all vectors of the image.

For a member ``v`` of pivot ``p`` and any row ``r``, ``d(v, r) >= d(p, r) - d(v, p)``: a row can bring a
member ``v`` of ``p`` within the image's best distance ``b`` only if ``d(p, r) <= b + reach[v]``. So the
pivots are scanned against every row, and the members only against the pivots' few candidate rows, the
nearest members against the fewest
(:meth:`monai_pso.index.search.ShardSearcher.nearest_per_image`); every comparison is certified as in
:mod:`monai_pso.index.search`, and the answer equals a float64 brute force over all vectors and rows.

Examples
--------
>>> from monai_pso.index.search import Queries
>>> x = np.array([[0, 0], [0.1, 0], [5, 5], [0, 0]], np.float32)
>>> groups = ViewGroups.cover(Queries.of(x), owner=np.array([0, 0, 0, 1]), cover=np.array([1.0, 1.0]))
>>> groups.pivots.tolist(), groups.pivot_of.tolist()
([0, 2, 3], [0, 0, 1, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monai_pso.index.exact import float64_slack, pair_distances

#: Pivot cover radius as a fraction of the image's first vector's nearest distance: members lie within
#: ``COVER_RATIO * b0`` of their pivot, so a pivot's candidates lie within about ``(1 + COVER_RATIO) b0``.
COVER_RATIO = 2.0

#: Floor of the cover radius as a fraction of the image's spread (largest distance from its first vector),
#: so that an image at distance ~0 of a training row (a copy) is not split into one pivot per vector.
COVER_SPREAD_FLOOR = 0.25


def group_starts(owner: np.ndarray) -> np.ndarray:
    """Start of each run of equal values in ``owner`` (sorted), and ``len(owner)`` at the end.

    Examples
    --------
    >>> group_starts(np.array([0, 0, 2, 2, 2])).tolist()
    [0, 2, 5]
    """
    return np.flatnonzero(np.r_[True, owner[1:] != owner[:-1], True]) if len(owner) else np.zeros(1, np.int64)


@dataclass
class ViewGroups:
    """Pivots covering each image's query vectors.

    Parameters
    ----------
    pivots
        ``(P,)`` positions (in the queries) of the pivot vectors.
    pivot_of
        ``(Q,)`` for each query vector, the number (``0..P-1``) of its pivot.
    reach
        ``(Q,)`` float64: padded upper bound of the canonical distance from each vector to its pivot.
    """

    pivots: np.ndarray
    pivot_of: np.ndarray
    reach: np.ndarray

    @classmethod
    def cover(cls, queries, owner: np.ndarray, cover: np.ndarray) -> ViewGroups:
        """Farthest-first pivots per image until every vector lies within ``cover[image]`` of one.

        ``owner`` is sorted (each image's vectors contiguous, its first vector the first pivot); ``queries``
        are :class:`~monai_pso.index.search.Queries`.
        """
        slack = float64_slack(queries.vectors.shape[1])
        pivots, pivot_of, reach = [], np.empty(len(owner), np.int64), np.empty(len(owner))
        starts = group_starts(owner)
        for begin, end in zip(starts[:-1], starts[1:]):
            members = np.arange(begin, end)
            nearest = np.full(len(members), np.inf)
            chosen = np.zeros(len(members), np.int64)
            candidate = 0
            while True:
                pivots.append(begin + candidate)
                distance = pair_distances(queries.vectors, queries.vectors, members, np.full(len(members), begin + candidate))
                closer = distance < nearest
                nearest[closer], chosen[closer] = distance[closer], len(pivots) - 1
                candidate = int(np.argmax(nearest))
                if nearest[candidate] <= cover[owner[begin]]:
                    break
            pivot_of[members], reach[members] = chosen, nearest * (1.0 + slack)
        return cls(np.asarray(pivots, np.int64), pivot_of, reach)

    @staticmethod
    def cover_radius(queries, owner: np.ndarray, seed_distance: np.ndarray) -> np.ndarray:
        """Per image (``seed_distance`` has one value per image number): ``max(COVER_RATIO * seed_distance,
        COVER_SPREAD_FLOOR * spread)``, the spread being the largest distance from its first vector."""
        starts = group_starts(owner)
        first = np.repeat(starts[:-1], np.diff(starts))
        spread = np.zeros(len(seed_distance))
        if len(owner):
            spread_of_vector = pair_distances(queries.vectors, queries.vectors, np.arange(len(owner)), first)
            spread[owner[starts[:-1]]] = np.maximum.reduceat(spread_of_vector, starts[:-1])
        return np.maximum(COVER_RATIO * np.asarray(seed_distance, np.float64), COVER_SPREAD_FLOOR * spread)

    def pivot_reach(self) -> np.ndarray:
        """``(P,)``: the largest :attr:`reach` of each pivot's members."""
        farthest = np.zeros(len(self.pivots))
        np.maximum.at(farthest, self.pivot_of, self.reach)
        return farthest

    def members(self) -> list[np.ndarray]:
        """For each pivot, the positions of its members (itself included), nearest to the pivot first."""
        order = np.lexsort((self.reach, self.pivot_of))
        bounds = np.searchsorted(self.pivot_of[order], np.arange(len(self.pivots) + 1))
        return [order[bounds[p] : bounds[p + 1]] for p in range(len(self.pivots))]


class NearestPerImage:
    """Per image: the smallest canonical distance offered so far and its global row (ties: the smaller row).

    Parameters
    ----------
    owner
        ``(Q,)`` image (``0..n_images-1``) of each query vector.
    n_images
        Number of images.

    Examples
    --------
    >>> state = NearestPerImage(np.array([0, 0, 1]), 2)
    >>> state.offer(np.array([0, 1, 1, 2]), np.array([7, 3, 9, 4]), np.array([2.0, 1.0, 1.0, 5.0]))
    >>> state.distance.tolist(), state.row.tolist()
    ([1.0, 5.0], [3, 4])
    """

    def __init__(self, owner: np.ndarray, n_images: int):
        self.owner = np.asarray(owner, np.int64)
        self.distance = np.full(n_images, np.inf)
        self.row = np.full(n_images, -1, np.int64)

    def radius(self, queries: np.ndarray) -> np.ndarray:
        """The best distance so far of each query vector's image."""
        return self.distance[self.owner[queries]]

    def offer(self, queries: np.ndarray, rows: np.ndarray, distances: np.ndarray) -> None:
        """Take pairs ``(query vector, global row, canonical distance)``."""
        if not len(queries):
            return
        images = self.owner[queries]
        order = np.lexsort((rows, distances, images))
        images, rows, distances = images[order], rows[order], distances[order]
        first = np.r_[True, images[1:] != images[:-1]]
        images, rows, distances = images[first], rows[first], distances[first]
        current, current_row = self.distance[images], self.row[images]
        better = (distances < current) | ((distances == current) & (rows < current_row))
        self.distance[images[better]] = distances[better]
        self.row[images[better]] = rows[better]
