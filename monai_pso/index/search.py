"""Exact search of one shard: float32 candidates from a backend, decisions in float64.

Two questions are answered, both through a *state* object shared by all shards of a search (so that
what one shard found tightens the search of the next):

- :class:`AnyWithin`: is some reference row at canonical distance ``< tau``? (early exit per query);
- :class:`TopK`: the ``k`` nearest rows, ties broken by the smaller global row number.

Two strategies give the same answers:

- ``flat`` scans every row. k-NN takes ``k + extra`` float32 candidates from the backend, re-measures
  them in float64 and *certifies* the result: a row not returned has float32 squared distance at least
  the last returned one, so its real distance is at least ``sqrt(d32_last - B)``; when that exceeds the
  k-th float64 distance the answer is proven, otherwise every row within the k-th distance is collected
  by a range scan (rare).
- ``pruned`` uses the cluster structure of the shard. With ``lb``/``ub`` certified bounds of the distance
  from a query to a centroid and ``R`` the cluster radius, the triangle inequality gives, for every member,
  ``d(q, r) >= lb - R``: the cluster is skipped when that is ``>= radius``. Members are sorted by their
  distance ``m`` to the centroid and ``|d(q, c) - m| <= d(q, r)``, so only members with
  ``lb - radius < m < ub + radius`` are scanned (one contiguous slice). For the range question that slice is
  first filtered in ``m`` dimensions (``D / 16``, 32 to 128) by the certified projection bound of
  :mod:`monai_pso.index.projection`, and the few pairs left are re-measured in float64. For k-NN the radius
  is the current k-th distance, seeded from the nearest cluster and shrinking as better rows are found; the
  slice is scanned in full dimension (near the k-th distance the projection leaves too many pairs).

The guard's own question, per image the nearest row over all its query vectors, is answered with a
:class:`~monai_pso.index.groups.NearestPerImage` state (see :mod:`monai_pso.index.groups`), one radius per
image: on large shards by :meth:`ShardSearcher.nearest_per_image` (pivots scanned against every row, their
members against the few rows the triangle inequality leaves, through the projection filter where the shard
has one), on small ones by :meth:`ShardSearcher.nearest_per_image_flat` (every vector against every row in
float32, only the pairs that may beat the image's best re-measured).

Every comparison is padded by :func:`~monai_pso.index.exact.float64_slack` in the conservative direction,
so pruning only ever removes rows whose canonical distance exceeds the radius.

Examples
--------
>>> from monai_pso.index.backends import get_backend
>>> from monai_pso.index.shard import Shard
>>> rng = np.random.default_rng(0)
>>> shard = Shard.build(rng.normal(size=(200, 8)).astype(np.float32), np.arange(200), n_clusters=8)
>>> searcher = ShardSearcher(shard, get_backend("faiss-cpu"))
>>> queries = Queries.of(rng.normal(size=(3, 8)).astype(np.float32))
>>> state = TopK(3, k=2)
>>> searcher.nearest(queries, state, "pruned")
>>> state.distances.shape
(3, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monai_pso.index.backends import Backend
from monai_pso.index.exact import (
    certified_lower,
    certified_upper,
    float32_error_bound,
    float64_slack,
    pair_distances,
    row_norms,
    squared_threshold,
)
from monai_pso.index.groups import NearestPerImage, ViewGroups, group_starts
from monai_pso.index.projection import project, projection_error
from monai_pso.index.shard import Shard

#: Strategies accepted by the searches.
STRATEGIES = ("auto", "pruned", "flat")

#: ``auto`` searches shards of at least this many rows ``pruned``, smaller ones ``flat`` (where the
#: per-cluster overhead costs more than the pruning saves).
AUTO_PRUNED_MIN_ROWS = 50_000

#: Rows scanned per block by the flat range scan (early exit is checked between blocks).
FLAT_BLOCK_ROWS = 1 << 16

#: ``auto`` answers the guard's per-image question on shards of at least this many rows with pivots
#: (:meth:`ShardSearcher.nearest_per_image`), on smaller ones with one flat pass of every vector
#: (:meth:`ShardSearcher.nearest_per_image_flat`): below it the pivots cost more than they save
#: (``flat_queries_per_s`` and ``grouped_queries_per_s`` of ``benchmarks/results/index_cpu.json``).
AUTO_GROUPED_MIN_ROWS = 2_000

#: Float32 distances held at once by the flat per-image pass (``vectors x rows`` per block: 64 MiB).
FLAT_PAIR_VALUES = 1 << 24

#: Rows per block whose float32 distance to a seed vector is re-measured to seed its image's radius.
SEED_CANDIDATES = 4

#: Members of a pivot measured together against the candidate rows the farthest of them can reach.
MEMBER_BLOCK = 32

#: Float32 candidates taken beyond ``k`` before certification.
EXTRA_CANDIDATES = 8


@dataclass
class Queries:
    """Query vectors ``(Q, D)`` float32 with their float64 norms."""

    vectors: np.ndarray
    norms: np.ndarray

    @classmethod
    def of(cls, vectors: np.ndarray) -> Queries:
        vectors = np.ascontiguousarray(vectors, np.float32)
        return cls(vectors, row_norms(vectors))

    def __len__(self) -> int:
        return len(self.vectors)


def float32_ceil(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) rounded up to float32: comparing float32 distances with them keeps every candidate.

    Examples
    --------
    >>> bool(float32_ceil(np.array([0.1]))[0] >= 0.1)
    True
    """
    return np.nextafter(np.asarray(values, np.float64).astype(np.float32), np.float32(np.inf))


def _rank_in_groups(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal keys (``sorted_keys`` sorted).

    Examples
    --------
    >>> _rank_in_groups(np.array([3, 3, 5, 7, 7, 7])).tolist()
    [0, 1, 0, 0, 1, 2]
    """
    if not len(sorted_keys):
        return np.zeros(0, np.int64)
    group_start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.arange(len(sorted_keys)) - np.repeat(group_start, np.diff(np.r_[group_start, len(sorted_keys)]))


class AnyWithin:
    """Per query: has a row at canonical distance strictly below ``tau`` been found?

    Examples
    --------
    >>> state = AnyWithin(2, tau=1.0)
    >>> state.offer(np.array([1]), np.array([7]), np.array([0.5]))
    >>> state.hit.tolist(), state.pending(np.arange(2)).tolist()
    ([False, True], [0])
    """

    #: Whether a query's own cluster is fully scanned (with the final radius) in the seeding phase.
    seeds_own_cluster_fully = True
    #: Whether the projection filter is used: it pays for a small radius (few survivors to re-measure).
    uses_projection = True

    def __init__(self, n_queries: int, tau: float):
        self.tau = float(tau)
        self.hit = np.zeros(n_queries, bool)

    def pending(self, queries: np.ndarray) -> np.ndarray:
        return queries[~self.hit[queries]]

    def radius(self, queries: np.ndarray) -> np.ndarray:
        return np.full(len(queries), self.tau)

    def select(self, queries: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """Decide candidate pairs from certified bounds where possible; the rest need float64."""
        self.hit[queries[upper < self.tau]] = True
        return ~self.hit[queries] & (lower < self.tau)

    def offer(self, queries: np.ndarray, rows: np.ndarray, distances: np.ndarray) -> None:
        self.hit[queries[distances < self.tau]] = True


class TopK:
    """Per query: the ``k`` smallest canonical distances seen and their global rows (ties: smaller row).

    Examples
    --------
    >>> state = TopK(1, k=2)
    >>> state.offer(np.array([0, 0, 0]), np.array([5, 3, 9]), np.array([2.0, 2.0, 1.0]))
    >>> state.distances.tolist(), state.rows.tolist()
    ([[1.0, 2.0]], [[9, 3]])
    """

    seeds_own_cluster_fully = False
    uses_projection = False

    def __init__(self, n_queries: int, k: int):
        self.k = k
        self.distances = np.full((n_queries, k), np.inf)
        self.rows = np.full((n_queries, k), -1, np.int64)

    def pending(self, queries: np.ndarray) -> np.ndarray:
        return queries

    def radius(self, queries: np.ndarray) -> np.ndarray:
        return self.distances[queries, -1]

    def select(self, queries: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """Candidate pairs that may enter the top ``k``: not beaten by ``k`` pairs' certified upper bounds."""
        order = np.lexsort((upper, queries))
        rank = _rank_in_groups(queries[order])
        owners, slot = np.unique(queries, return_inverse=True)
        kth_upper = np.full(len(owners), np.inf)
        at_k = order[rank == self.k - 1]
        kth_upper[slot[at_k]] = upper[at_k]
        return lower <= np.minimum(self.distances[queries, -1], kth_upper[slot])

    def offer(self, queries: np.ndarray, rows: np.ndarray, distances: np.ndarray) -> None:
        if not len(queries):
            return
        touched = np.unique(queries)
        old_rows = self.rows[touched].ravel()
        known = old_rows >= 0
        q = np.concatenate([np.repeat(touched, self.k)[known], queries])
        r = np.concatenate([old_rows[known], rows])
        d = np.concatenate([self.distances[touched].ravel()[known], distances])
        order = np.lexsort((r, d, q))
        q, r, d = q[order], r[order], d[order]
        fresh = np.ones(len(q), bool)
        fresh[1:] = (q[1:] != q[:-1]) | (r[1:] != r[:-1])
        q, r, d = q[fresh], r[fresh], d[fresh]
        rank = _rank_in_groups(q)
        keep = rank < self.k
        self.distances[touched] = np.inf
        self.rows[touched] = -1
        self.distances[q[keep], rank[keep]] = d[keep]
        self.rows[q[keep], rank[keep]] = r[keep]


SearchState = AnyWithin | TopK


class ShardSearcher:
    """Searches one shard with one backend (the shard's rows are placed on the backend once).

    Parameters
    ----------
    shard
        The shard.
    backend
        The float32 arithmetic.
    slot
        Which device the shard goes to when the backend has several (GPU ``slot % n``).
    """

    def __init__(self, shard: Shard, backend: Backend, slot: int = 0):
        self.shard = shard
        self.backend = backend
        self.slot = slot
        self.slack = float64_slack(shard.dim)
        self.placed = backend.place(shard.vectors, shard.norms, slot)
        self.placed_centroids = backend.place(shard.centroids, shard.centroid_norms, slot)
        self.radii_high = shard.radii * (1.0 + self.slack)
        self.max_norm = float(np.max(shard.norms))
        self.placed_projected = None
        if shard.projection_dim:
            projected_norms = row_norms(shard.projected)
            self.projected_norms = projected_norms
            self.placed_projected = backend.place(shard.projected, projected_norms, slot)
            self.cluster_max_projected_norm = np.maximum.reduceat(projected_norms, shard.offsets[:-1])
        #: (query, row) pairs whose float32 distance was computed in full / projected dimension, and pairs
        #: re-measured in float64 (statistics).
        self.pairs_scanned = 0
        self.projected_pairs_scanned = 0
        self.pairs_remeasured = 0

    # -- building blocks -------------------------------------------------------------------------

    def _bound(self, queries: Queries, selected: np.ndarray, ref_norm: np.ndarray | float) -> np.ndarray:
        return float32_error_bound(self.shard.dim, queries.norms[selected], ref_norm)

    def _offer(self, queries: Queries, selected: np.ndarray, local_rows: np.ndarray, state: SearchState) -> None:
        """Re-measure pairs ``(selected[j], local_rows[j])`` in float64 and hand them to ``state``."""
        distances = pair_distances(queries.vectors, self.shard.vectors, selected, local_rows)
        self.pairs_remeasured += len(selected)
        state.offer(selected, self.shard.row_id[local_rows] + self.shard.row_offset, distances)

    def _scan(self, queries: Queries, selected: np.ndarray, start: int, stop: int, state: SearchState, ref_norm: float) -> None:
        """Offer every row of ``start:stop`` that may lie within each selected query's radius."""
        self.pairs_scanned += len(selected) * (stop - start)
        bound = self._bound(queries, selected, ref_norm)
        thresholds = squared_threshold(state.radius(selected), bound, self.slack)
        pairs_q, pairs_r, float32_sq = self.backend.below(queries.vectors[selected], self.placed, start, stop, thresholds)
        if not len(pairs_q):
            return
        lower = certified_lower(float32_sq, bound[pairs_q], self.slack)
        upper = certified_upper(float32_sq, bound[pairs_q], self.slack)
        owners = selected[pairs_q]
        needed = state.select(owners, lower, upper)
        if needed.any():
            self._offer(queries, owners[needed], pairs_r[needed] + start, state)

    def _knn_seed(self, queries: Queries, selected: np.ndarray, start: int, stop: int, k: int, state: TopK) -> np.ndarray:
        """Offer the float32 ``k + extra`` nearest rows of ``start:stop``; returns their last float32 value."""
        kk = min(stop - start, k + EXTRA_CANDIDATES)
        self.pairs_scanned += len(selected) * (stop - start)
        float32_sq, positions = self.backend.knn(queries.vectors[selected], self.placed, kk, start, stop)
        self._offer(queries, np.repeat(selected, kk), positions.ravel() + start, state)
        return float32_sq[:, -1]

    # -- flat ------------------------------------------------------------------------------------

    def _range_flat(self, queries: Queries, selected: np.ndarray, state: SearchState) -> None:
        for start in range(0, self.shard.n_rows, FLAT_BLOCK_ROWS):
            selected = state.pending(selected)
            if not len(selected):
                return
            stop = min(self.shard.n_rows, start + FLAT_BLOCK_ROWS)
            self._scan(queries, selected, start, stop, state, float(np.max(self.shard.norms[start:stop])))

    def _nearest_flat(self, queries: Queries, state: TopK) -> None:
        everyone = np.arange(len(queries))
        last = self._knn_seed(queries, everyone, 0, self.shard.n_rows, state.k, state)
        if min(self.shard.n_rows, state.k + EXTRA_CANDIDATES) == self.shard.n_rows:
            return
        unseen_lower = certified_lower(last, self._bound(queries, everyone, self.max_norm), self.slack)
        unsure = everyone[~(unseen_lower > state.radius(everyone) * (1.0 + self.slack))]
        if len(unsure):
            self._range_flat(queries, unsure, state)

    # -- pruned ----------------------------------------------------------------------------------

    def _centroid_bounds(self, queries: Queries) -> tuple[np.ndarray, np.ndarray]:
        """Certified lower and upper bounds ``(Q, K)`` of the distances from queries to centroids."""
        float32_sq = self.backend.sqdist(queries.vectors, self.placed_centroids, 0, self.shard.n_clusters)
        bound = float32_error_bound(self.shard.dim, queries.norms[:, None], self.shard.centroid_norms[None, :])
        return certified_lower(float32_sq, bound, self.slack), certified_upper(float32_sq, bound, self.slack)

    def _scan_projected(self, queries: Queries, projected: Queries, selected: np.ndarray, start: int, stop: int, state: SearchState, cluster: int) -> None:
        """Offer the rows of ``start:stop`` (inside ``cluster``) that the projection filter cannot exclude."""
        self.projected_pairs_scanned += len(selected) * (stop - start)
        scale = self.shard.projection_scale
        reach = state.radius(selected) * ((1.0 + self.slack) * scale)
        reach += projection_error(scale, queries.norms[selected] + self.shard.cluster_max_norm[cluster])
        bound = float32_error_bound(self.shard.projection_dim, projected.norms[selected], self.cluster_max_projected_norm[cluster])
        thresholds = squared_threshold(reach, bound, self.slack)
        pairs_q, pairs_r, _ = self.backend.below(projected.vectors[selected], self.placed_projected, start, stop, thresholds)
        if len(pairs_q):
            self._offer(queries, selected[pairs_q], pairs_r + start, state)

    def _scan_cluster(self, queries: Queries, projected: Queries | None, selected: np.ndarray, cluster: int, lower: np.ndarray, upper: np.ndarray, state: SearchState) -> None:
        """Scan the part of ``cluster`` that can hold rows within each selected query's radius."""
        radius = state.radius(selected) * (1.0 + self.slack)
        low, high = lower[selected, cluster], upper[selected, cluster]
        reachable = low - self.radii_high[cluster] < radius
        if not reachable.any():
            return
        selected, radius, low, high = selected[reachable], radius[reachable], low[reachable], high[reachable]
        start, stop = int(self.shard.offsets[cluster]), int(self.shard.offsets[cluster + 1])
        members = self.shard.member_dist[start:stop]
        inner = low - radius
        inner = np.where(inner > 0, inner * (1.0 - self.slack), -np.inf)
        first = np.searchsorted(members, inner, side="left")
        last = np.searchsorted(members, (high + radius) * (1.0 + self.slack), side="right")
        useful = first < last
        if useful.any():
            lo, hi = start + int(first[useful].min()), start + int(last[useful].max())
            if projected is None:
                self._scan(queries, selected[useful], lo, hi, state, float(self.shard.cluster_max_norm[cluster]))
            else:
                self._scan_projected(queries, projected, selected[useful], lo, hi, state, cluster)

    def _search_pruned(self, queries: Queries, state: SearchState) -> None:
        lower, upper = self._centroid_bounds(queries)
        projected = None
        if self.shard.projection_dim and state.uses_projection:
            projected = Queries.of(project(queries.vectors, self.shard.projection))
        everyone = np.arange(len(queries))
        home = np.argmin(lower, axis=1)
        for cluster in np.unique(home):
            group = state.pending(everyone[home == cluster])
            if not len(group):
                continue
            if state.seeds_own_cluster_fully:
                self._scan_cluster(queries, projected, group, int(cluster), lower, upper, state)
            else:
                start, stop = int(self.shard.offsets[cluster]), int(self.shard.offsets[cluster + 1])
                self._knn_seed(queries, group, start, stop, state.k, state)
        if isinstance(state, TopK) and np.isinf(state.radius(everyone)).any():  # home cluster smaller than k
            self._knn_seed(queries, everyone[np.isinf(state.radius(everyone))], 0, self.shard.n_rows, state.k, state)
        visit = lower - self.radii_high[None, :] < state.radius(everyone)[:, None] * (1.0 + self.slack)
        if state.seeds_own_cluster_fully:
            visit[everyone, home] = False
        clusters, members = np.nonzero(visit.T)
        if not len(clusters):
            return
        bounds = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1], True])
        for begin, end in zip(bounds[:-1], bounds[1:]):
            group = state.pending(members[begin:end])
            if len(group):
                self._scan_cluster(queries, projected, group, int(clusters[begin]), lower, upper, state)

    # -- grouped 1-NN (the guard's question) ----------------------------------------------------

    def _may_beat(self, float32_sq: np.ndarray, bound: np.ndarray, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs ``(vector, column)`` of ``float32_sq`` whose canonical distance may be at most ``best`` (per
        vector, an achieved distance of its image): every pair that can be the image's nearest, ties included."""
        limits = squared_threshold(best * (1.0 + self.slack) / (1.0 - self.slack), bound, self.slack)
        return np.nonzero(float32_sq <= float32_ceil(limits)[:, None])

    def _offer_members(self, queries: Queries, members: np.ndarray, reach: np.ndarray, local_rows: np.ndarray, pivot_lower: np.ndarray, state: NearestPerImage) -> None:
        """Measure one pivot's ``members`` (one image's vectors, nearest to the pivot first), block by block,
        against the candidate rows the block's farthest member can reach (by their certified distance
        ``pivot_lower`` to the pivot); re-measure in float64 the pairs that may be the image's nearest."""
        for lo in range(0, len(members), MEMBER_BLOCK):
            group = members[lo : lo + MEMBER_BLOCK]
            radius = (float(state.radius(group[:1])[0]) * (1.0 + self.slack) + reach[group[-1]]) * (1.0 + self.slack)
            rows = local_rows[pivot_lower <= radius]
            if not len(rows):
                continue
            gathered = self.backend.place(np.ascontiguousarray(self.shard.vectors[rows]), self.shard.norms[rows], self.slot)
            float32_sq = self.backend.sqdist(np.ascontiguousarray(queries.vectors[group]), gathered, 0, len(rows))
            self.pairs_scanned += float32_sq.size
            bound = self._bound(queries, group, float(np.max(self.shard.norms[rows])))  # per member: one pass over the pairs below
            best = min(float(state.radius(group[:1])[0]), float(certified_upper(float32_sq.min(axis=1), bound, self.slack).min()))
            pick_q, pick_r = self._may_beat(float32_sq, bound, np.full(len(group), best))
            self._offer(queries, group[pick_q], rows[pick_r], state)

    def _offer_members_projected(
        self, queries: Queries, projected: Queries, members: np.ndarray, reach: np.ndarray, local_rows: np.ndarray, pivot_lower: np.ndarray, state: NearestPerImage
    ) -> None:
        """:meth:`_offer_members` through the projection filter: each member's pairs whose projected
        distance allows ``d(v, r) <= b`` are re-measured in float64 directly (no full float32 distances)."""
        scale = self.shard.projection_scale
        for lo in range(0, len(members), MEMBER_BLOCK):
            group = members[lo : lo + MEMBER_BLOCK]
            best = float(state.radius(group[:1])[0]) * (1.0 + self.slack)
            rows = local_rows[pivot_lower <= (best + reach[group[-1]]) * (1.0 + self.slack)]
            if not len(rows):
                continue
            gathered = self.backend.place(np.ascontiguousarray(self.shard.projected[rows]), self.projected_norms[rows], self.slot)
            float32_sq = self.backend.sqdist(np.ascontiguousarray(projected.vectors[group]), gathered, 0, len(rows))
            self.projected_pairs_scanned += float32_sq.size
            eps = projection_error(scale, queries.norms[group] + float(np.max(self.shard.norms[rows])))
            bound = float32_error_bound(self.shard.projection_dim, projected.norms[group], float(np.max(self.projected_norms[rows])))
            limits = squared_threshold(best * ((1.0 + self.slack) * scale) + eps, bound, self.slack)
            pick_q, pick_r = np.nonzero(float32_sq <= float32_ceil(limits)[:, None])
            self._offer(queries, group[pick_q], rows[pick_r], state)

    def _pivot_candidates(self, queries: Queries, pivots: np.ndarray, pivot_reach: np.ndarray, start: int, stop: int, state: NearestPerImage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of ``start:stop`` with certified ``d(p, r) <= b + reach`` per pivot, from full float32
        distances: ``(pivot number, row - start, certified lower bound of d(p, r))``."""
        float32_sq = self.backend.sqdist(np.ascontiguousarray(queries.vectors[pivots]), self.placed, start, stop)
        self.pairs_scanned += float32_sq.size
        self._offer(queries, pivots, np.argmin(float32_sq, axis=1) + start, state)  # each pivot's nearest row of the block tightens b
        bound = self._bound(queries, pivots, float(np.max(self.shard.norms[start:stop])))
        limits = squared_threshold(state.radius(pivots) * (1.0 + self.slack) + pivot_reach, bound, self.slack)
        pairs_p, pairs_r = np.divmod(np.flatnonzero(float32_sq <= float32_ceil(limits)[:, None]), stop - start)
        return pairs_p, pairs_r, certified_lower(float32_sq[pairs_p, pairs_r], bound[pairs_p], self.slack)

    def _pivot_candidates_projected(
        self, queries: Queries, projected: Queries, pivots: np.ndarray, pivot_reach: np.ndarray, start: int, stop: int, state: NearestPerImage
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same from the ``m``-dimensional projections (:mod:`monai_pso.index.projection`), with
        ``d(p, r) >= (||p~(p) - p~(r)|| - eps(p) - eps(r)) / s`` as the lower bound: ``D / m`` times cheaper."""
        float32_sq = self.backend.sqdist(np.ascontiguousarray(projected.vectors[pivots]), self.placed_projected, start, stop)
        self.projected_pairs_scanned += float32_sq.size
        scale = self.shard.projection_scale
        eps = projection_error(scale, queries.norms[pivots] + float(np.max(self.shard.norms[start:stop])))
        bound = float32_error_bound(self.shard.projection_dim, projected.norms[pivots], float(np.max(self.projected_norms[start:stop])))
        radius = state.radius(pivots) * (1.0 + self.slack) + pivot_reach
        limits = squared_threshold(radius * ((1.0 + self.slack) * scale) + eps, bound, self.slack)
        pairs_p, pairs_r = np.divmod(np.flatnonzero(float32_sq <= float32_ceil(limits)[:, None]), stop - start)
        lower = (certified_lower(float32_sq[pairs_p, pairs_r], bound[pairs_p], self.slack) - eps[pairs_p]) / scale * (1.0 - self.slack)
        return pairs_p, pairs_r, lower

    def seed_per_image(self, queries: Queries, seeds: np.ndarray, state: NearestPerImage) -> None:
        """Offer, for each seed vector, the :data:`SEED_CANDIDATES` rows of each block with the smallest float32
        distance (projected, when the shard has the projection filter), re-measured in float64.

        This gives each image an achieved distance near its seed's nearest, cheaply and without proof: the
        grouped search that follows (:meth:`nearest_per_image`) covers every vector, the seed included.
        """
        if self.placed_projected is not None:
            vectors, placed = project(queries.vectors[seeds], self.shard.projection), self.placed_projected
        else:
            vectors, placed = np.ascontiguousarray(queries.vectors[seeds]), self.placed
        for start in range(0, self.shard.n_rows, FLAT_BLOCK_ROWS):
            stop = min(self.shard.n_rows, start + FLAT_BLOCK_ROWS)
            float32_sq = self.backend.sqdist(vectors, placed, start, stop)
            if self.placed_projected is not None:
                self.projected_pairs_scanned += float32_sq.size
            else:
                self.pairs_scanned += float32_sq.size
            k = min(SEED_CANDIDATES, stop - start)
            nearest = np.argpartition(float32_sq, k - 1, axis=1)[:, :k] if k < stop - start else np.broadcast_to(np.arange(k), (len(seeds), k))
            self._offer(queries, np.repeat(seeds, k), nearest.ravel() + start, state)

    def nearest_per_image(self, queries: Queries, groups: ViewGroups, state: NearestPerImage) -> None:
        """Update ``state`` with each image's exact nearest row of this shard over all its query vectors.

        Block by block of rows: certified lower bounds of the pivots' distances to every row, from the
        projection filter when the shard has one (else from full float32 distances, each pivot's nearest row
        of the block then re-measured in float64 to tighten the image's radius ``b``); for each pivot, only
        the rows that may lie within ``b + reach`` are measured in full against its members, each block of
        members against the rows its farthest member can reach (see :mod:`monai_pso.index.groups`).
        """
        pivots = groups.pivots
        pivot_reach = groups.pivot_reach()
        members = groups.members()
        projected = Queries.of(project(queries.vectors, self.shard.projection)) if self.placed_projected is not None else None
        for start in range(0, self.shard.n_rows, FLAT_BLOCK_ROWS):
            stop = min(self.shard.n_rows, start + FLAT_BLOCK_ROWS)
            if projected is None:
                pairs_p, pairs_r, lower = self._pivot_candidates(queries, pivots, pivot_reach, start, stop, state)
            else:
                pairs_p, pairs_r, lower = self._pivot_candidates_projected(queries, projected, pivots, pivot_reach, start, stop, state)
            bounds = np.searchsorted(pairs_p, np.arange(len(pivots) + 1))
            for p in np.flatnonzero(np.diff(bounds)):
                segment = slice(bounds[p], bounds[p + 1])
                rows, pivot_lower = pairs_r[segment] + start, lower[segment]
                if projected is None:
                    self._offer_members(queries, members[p], groups.reach, rows, pivot_lower, state)
                else:
                    self._offer_members_projected(queries, projected, members[p], groups.reach, rows, pivot_lower, state)

    def nearest_per_image_flat(self, queries: Queries, state: NearestPerImage) -> None:
        """Update ``state`` with each image's exact nearest row of this shard, without pivots.

        Block by block of rows, every vector's float32 distance to every row; each image's best certified
        upper bound (its own, or an achieved distance from an earlier shard) bounds which pairs may be its
        nearest, and only those are re-measured in float64. One matrix product per block and no per-pivot
        work: faster than :meth:`nearest_per_image` below :data:`AUTO_GROUPED_MIN_ROWS` rows.
        """
        everyone = np.arange(len(queries))
        runs = group_starts(state.owner)
        step = max(1, FLAT_PAIR_VALUES // max(1, len(queries)))
        for start in range(0, self.shard.n_rows, step):
            stop = min(self.shard.n_rows, start + step)
            float32_sq = self.backend.sqdist(queries.vectors, self.placed, start, stop)
            self.pairs_scanned += float32_sq.size
            bound = self._bound(queries, everyone, float(np.max(self.shard.norms[start:stop])))
            upper = certified_upper(float32_sq.min(axis=1), bound, self.slack)
            best = np.minimum(state.radius(everyone), np.repeat(np.minimum.reduceat(upper, runs[:-1]), np.diff(runs)))
            pick_q, pick_r = self._may_beat(float32_sq, bound, best)
            self._offer(queries, pick_q, pick_r + start, state)

    def groups_pay(self, strategy: str) -> bool:
        """Whether :meth:`nearest_per_image` (pivots) rather than :meth:`nearest_per_image_flat` answers
        the per-image question here: ``pruned``, or ``auto`` on a shard of :data:`AUTO_GROUPED_MIN_ROWS` or more."""
        return strategy == "pruned" or (strategy == "auto" and self.shard.n_rows >= AUTO_GROUPED_MIN_ROWS)

    # -- public ----------------------------------------------------------------------------------

    def _flat(self, strategy: str) -> bool:
        return strategy == "flat" or (strategy == "auto" and self.shard.n_rows < AUTO_PRUNED_MIN_ROWS)

    def nearest(self, queries: Queries, state: TopK, strategy: str = "auto") -> None:
        """Update ``state`` with the exact ``k`` nearest rows of this shard."""
        if self._flat(strategy):
            self._nearest_flat(queries, state)
        else:
            self._search_pruned(queries, state)

    def any_within(self, queries: Queries, state: AnyWithin, strategy: str = "auto") -> None:
        """Mark in ``state`` the queries with a row of this shard at canonical distance ``< state.tau``."""
        if self._flat(strategy):
            self._range_flat(queries, state.pending(np.arange(len(queries))), state)
        else:
            self._search_pruned(queries, state)
