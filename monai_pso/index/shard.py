"""A shard: a block of reference rows with its cluster structure, stored as plain ``.npy`` files.

A shard holds a contiguous range of global rows, ``row_offset`` to ``row_offset + n`` in the order rows
were added (image by image, tile by tile), but *stores* them cluster by cluster
(:mod:`monai_pso.index.clusters`): ``row_id[p]`` is the row (relative to ``row_offset``) stored at position
``p``. Searches report global row numbers, so results do not depend on the clustering, on the sharding,
or on which subset of shards a process (one member of a distributed group, one GPU) holds.

Every array the search reads is checked at load. Each array's content digest
(:attr:`Shard.array_digests`) is a leaf of the index's content fingerprint
(:attr:`~monai_pso.index.ReferenceIndex.fingerprint`) and is recorded in the manifest, so an array edited
after save is named even when the file sha256s were recomputed. The arrays derived from the vectors are
also recomputed (:meth:`Shard.verify_derived`): the row norms (they enter the float32 error bound) and the
distances of the rows to their cluster's centroid (whose maximum per cluster is the radius pruning relies
on), so radii, norms, centroids and offsets that do not fit the vectors are refused even if every digest
were rewritten. The projection filter's arrays are covered by the fingerprint (recomputing them costs a
product with the projection matrix per row).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> shard = Shard.build(rng.normal(size=(40, 8)).astype(np.float32), np.arange(40) // 4, n_clusters=4)
>>> shard.n_rows, shard.dim, int(shard.offsets[-1])
(40, 8, 40)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from monai_pso.errors import ConfigurationError, IndexIntegrityError
from monai_pso.index.clusters import cluster_rows, member_distances
from monai_pso.index.exact import row_norms, same_up_to_float64_rounding
from monai_pso.index.projection import default_projection_dim, fit_projection, project, spectral_norm

#: The arrays of a shard, each saved as ``<name>.npy``, with their dtypes.
SHARD_ARRAYS = {
    "vectors": np.float32,
    "row_id": np.int64,
    "row_item": np.int64,
    "norms": np.float64,
    "centroids": np.float32,
    "offsets": np.int64,
    "member_dist": np.float64,
    "projection": np.float32,
    "projected": np.float32,
}

#: Rows hashed per block by :func:`array_digest` (bounds memory on memory-mapped vectors).
HASH_ROWS = 1 << 16


def array_digest(name: str, array: np.ndarray) -> str:
    """sha256 of an array's name, dtype, shape and bytes (C order), read in blocks of rows.

    Examples
    --------
    >>> a = np.arange(6, dtype=np.int64)
    >>> array_digest("offsets", a) == array_digest("offsets", a.copy()) != array_digest("offsets", a.reshape(2, 3))
    True
    """
    dtype = np.dtype(SHARD_ARRAYS.get(name, array.dtype))
    digest = hashlib.sha256(f"{name}:{dtype.str}:{tuple(int(n) for n in array.shape)}:".encode())
    if array.ndim == 0:
        digest.update(np.ascontiguousarray(array, dtype).tobytes())
    for start in range(0, len(array) if array.ndim else 0, HASH_ROWS):
        digest.update(np.ascontiguousarray(array[start : start + HASH_ROWS], dtype).reshape(-1).view(np.uint8))  # no copy
    return digest.hexdigest()


@dataclass
class Shard:
    """Reference rows (cluster-ordered) and the cluster structure used for certified pruning.

    Parameters
    ----------
    vectors
        ``(n, D)`` float32 rows, stored cluster by cluster (may be a read-only memory map).
    row_id
        ``(n,)`` int64 row (relative to ``row_offset``) stored at each position: a permutation.
    row_item
        ``(n,)`` int64 index of the item (training image) of each row, in row order (not storage order).
    norms
        ``(n,)`` float64 L2 norm of each stored row (enters the float32 error bound).
    centroids
        ``(K, D)`` float32 cluster centroids.
    offsets
        ``(K + 1,)`` int64 cluster boundaries in the row order.
    member_dist
        ``(n,)`` float64 distance of each stored row to its centroid, ascending within each cluster.
    projection
        ``(D, m)`` float32 principal directions of the rows (``m = 0``: no projection filter).
    projected
        ``(n, m)`` float32 projections of the stored rows (:mod:`monai_pso.index.projection`).
    row_offset
        Global number of the first row.
    """

    vectors: np.ndarray
    row_id: np.ndarray
    row_item: np.ndarray
    norms: np.ndarray
    centroids: np.ndarray
    offsets: np.ndarray
    member_dist: np.ndarray
    projection: np.ndarray
    projected: np.ndarray
    row_offset: int = 0

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        row_item: np.ndarray,
        n_clusters: int | None = None,
        seed: int = 0,
        row_offset: int = 0,
        projection_dim: int | None = None,
    ) -> Shard:
        """Cluster ``vectors`` and lay them out; ``row_item[i]`` is the item of ``vectors[i]``.

        ``projection_dim`` directions feed the projection filter (default :func:`default_projection_dim`).
        """
        layout = cluster_rows(vectors, n_clusters, seed)
        placed = np.ascontiguousarray(np.asarray(vectors, np.float32)[layout.order])
        if projection_dim is None:
            projection_dim = default_projection_dim(placed.shape[1])
        projection = fit_projection(placed, projection_dim, seed)
        return cls(
            vectors=placed,
            row_id=layout.order,
            row_item=np.asarray(row_item, np.int64).copy(),
            norms=row_norms(placed),
            centroids=layout.centroids,
            offsets=layout.offsets,
            member_dist=layout.member_dist,
            projection=projection,
            projected=project(placed, projection),
            row_offset=row_offset,
        )

    @property
    def n_rows(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def n_clusters(self) -> int:
        return int(len(self.offsets) - 1)

    @cached_property
    def array_digests(self) -> dict[str, str]:
        """:func:`array_digest` of every array of :data:`SHARD_ARRAYS`, by name (computed once)."""
        return {name: array_digest(name, getattr(self, name)) for name in SHARD_ARRAYS}

    @cached_property
    def radii(self) -> np.ndarray:
        """Float64 radius of each cluster: the largest member distance (the last, as they are sorted)."""
        return np.asarray(self.member_dist[self.offsets[1:] - 1], np.float64)

    @cached_property
    def position_of_row(self) -> np.ndarray:
        """``(n,)`` int64 storage position of each row (relative to ``row_offset``): the inverse of ``row_id``."""
        positions = np.empty(len(self.row_id), np.int64)
        positions[self.row_id] = np.arange(len(self.row_id))
        return positions

    @cached_property
    def cluster_max_norm(self) -> np.ndarray:
        """Largest row norm in each cluster."""
        return np.maximum.reduceat(np.asarray(self.norms), self.offsets[:-1])

    @cached_property
    def centroid_norms(self) -> np.ndarray:
        return row_norms(self.centroids)

    @property
    def projection_dim(self) -> int:
        return int(self.projection.shape[1])

    @cached_property
    def projection_scale(self) -> float:
        """Upper bound of the spectral norm of :attr:`projection` (0 without projection)."""
        return spectral_norm(self.projection)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays written to disk, by name (see :data:`SHARD_ARRAYS`)."""
        return {name: getattr(self, name) for name in SHARD_ARRAYS}

    def save(self, directory: Path) -> list[Path]:
        """Write every array as ``directory/<name>.npy``; returns the files written."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, array in self.arrays().items():
            path = directory / f"{name}.npy"
            np.save(path, np.ascontiguousarray(array))
            written.append(path)
        return written

    @classmethod
    def load(cls, directory: Path, row_offset: int, mmap: bool = True, digests: Mapping[str, str] | None = None) -> Shard:
        """Read a shard written by :meth:`save` (``vectors`` memory-mapped when ``mmap``) and check it.

        Checks, each refusing with :class:`IndexIntegrityError` naming the array: dtypes, each array's
        content against ``digests`` (the :attr:`array_digests` recorded at save) when given, shapes and
        layout (:meth:`validate`), and the derived arrays against the vectors (:meth:`verify_derived`).
        """
        arrays = {}
        for name, dtype in SHARD_ARRAYS.items():
            path = directory / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r" if mmap and name == "vectors" else None, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise IndexIntegrityError(f"{path}: cannot be read ({error})") from None
            if array.dtype != dtype:
                raise IndexIntegrityError(f"{path}: dtype {array.dtype}, expected {np.dtype(dtype)}")
            arrays[name] = array
        shard = cls(**arrays, row_offset=row_offset)
        if digests is not None:
            changed = [name for name in SHARD_ARRAYS if shard.array_digests[name] != digests.get(name)]
            if changed:
                names = ", ".join(str(directory / f"{name}.npy") for name in changed)
                raise IndexIntegrityError(f"{names}: content differs from the digest recorded in the index fingerprint at save (modified after the index was written)")
        shard.validate(directory)
        shard.verify_derived(directory)
        return shard

    def verify_derived(self, location: Path | str) -> None:
        """Raise :class:`IndexIntegrityError` unless the norms and member distances are those of the vectors.

        ``norms`` must be the rows' norms and ``member_dist`` each row's distance to the centroid of its
        cluster (``centroids``, ``offsets``), both to float64 rounding
        (:func:`~monai_pso.index.exact.same_up_to_float64_rounding`): the float32 error bound and the
        cluster radii of pruned search then hold for the vectors actually searched.
        """
        location = Path(location)
        bad = np.flatnonzero(~same_up_to_float64_rounding(self.norms, row_norms(self.vectors), self.dim))
        if len(bad):
            raise IndexIntegrityError(
                f"{location / 'norms.npy'}: {len(bad)} stored row norms (rows {bad[:5].tolist()}) differ from the norms of "
                f"{location / 'vectors.npy'} (modified after the index was written)"
            )
        recomputed = member_distances(self.vectors, self.centroids, self.offsets)
        bad = np.flatnonzero(~same_up_to_float64_rounding(self.member_dist, recomputed, self.dim))
        if len(bad):
            clusters = np.unique(np.searchsorted(self.offsets, bad, side="right") - 1)
            raise IndexIntegrityError(
                f"{location / 'member_dist.npy'}: {len(bad)} member distances (so the radii of clusters {clusters[:5].tolist()}) differ "
                f"from the distances of the rows of vectors.npy to their centroids in centroids.npy, clusters as in offsets.npy "
                "(one of these was modified after the index was written)"
            )

    def validate(self, location: Path | str) -> None:
        """Raise :class:`IndexIntegrityError` when the arrays do not fit together."""
        n, k = self.n_rows, self.n_clusters
        problems = []
        if self.vectors.ndim != 2 or n == 0:
            problems.append(f"vectors shaped {self.vectors.shape}")
        for name in ("row_id", "row_item", "norms", "member_dist"):
            if getattr(self, name).shape != (n,):
                problems.append(f"{name} shaped {getattr(self, name).shape}, expected ({n},)")
        if self.centroids.ndim != 2 or self.centroids.shape[1:] != self.vectors.shape[1:] or k < 1:
            problems.append(f"centroids shaped {self.centroids.shape}")
        elif len(self.centroids) != k:
            problems.append(f"{len(self.centroids)} centroids for {k} clusters")
        if k >= 1 and (self.offsets[0] != 0 or self.offsets[-1] != n or np.any(np.diff(self.offsets) <= 0)):
            problems.append("cluster offsets are not increasing from 0 to the row count")
        elif n:
            steps = np.diff(np.asarray(self.member_dist))
            steps[self.offsets[1:-1] - 1] = 0.0
            if np.any(steps < 0) or not np.isfinite(self.member_dist).all():
                problems.append("member distances (member_dist.npy) are not sorted within the clusters of offsets.npy")
        m = self.projection.shape[1] if self.projection.ndim == 2 else -1
        if self.projection.shape != (self.vectors.shape[1], m) or self.projected.shape != (n, m):
            problems.append(f"projection {self.projection.shape} and projected {self.projected.shape} do not fit")
        if self.row_id.shape == (n,) and not np.array_equal(np.sort(self.row_id), np.arange(n)):
            problems.append("row ids are not a permutation")
        if problems:
            raise IndexIntegrityError(f"{location}: inconsistent shard: {'; '.join(problems)}")


#: Bytes of float32 vectors per shard unless told otherwise (1 GiB: 2**20 rows at dimension 256).
DEFAULT_SHARD_BYTES = 1 << 30


def default_shard_rows(dim: int) -> int:
    """Rows per shard of :data:`DEFAULT_SHARD_BYTES` at dimension ``dim``.

    Examples
    --------
    >>> default_shard_rows(256), default_shard_rows(1024)
    (1048576, 262144)
    """
    return max(1, DEFAULT_SHARD_BYTES // (4 * dim))


class ShardBuilder:
    """Collects rows batch by batch and cuts them into clustered shards of ``shard_rows`` rows.

    ``shard_rows=None`` takes :func:`default_shard_rows` of the dimension of the first rows added.

    Examples
    --------
    >>> builder = ShardBuilder(shard_rows=30, n_clusters=2)
    >>> for start in range(0, 70, 20):
    ...     builder.add(np.random.default_rng(start).normal(size=(20, 4)).astype(np.float32), np.arange(start, start + 20))
    >>> [(s.row_offset, s.n_rows) for s in builder.finish()]
    [(0, 30), (30, 30), (60, 20)]
    """

    def __init__(
        self, shard_rows: int | None = None, n_clusters: int | None = None, seed: int = 0, projection_dim: int | None = None
    ):
        if shard_rows is not None and shard_rows < 1:
            raise ConfigurationError(f"shard_rows={shard_rows!r}: must be positive")
        self.shard_rows, self.n_clusters, self.seed, self.projection_dim = shard_rows, n_clusters, seed, projection_dim
        self.shards: list[Shard] = []
        self._vectors: list[np.ndarray] = []
        self._items: list[np.ndarray] = []
        self._pending = 0

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.shards) + self._pending

    def add(self, vectors: np.ndarray, row_item: np.ndarray) -> None:
        """Append rows ``(n, D)`` float32 and the item index of each."""
        if len(vectors) != len(row_item):
            raise ValueError(f"{len(vectors)} rows but {len(row_item)} item indices")
        if self.shard_rows is None:
            self.shard_rows = default_shard_rows(vectors.shape[1])
        self._vectors.append(np.asarray(vectors, np.float32))
        self._items.append(np.asarray(row_item, np.int64))
        self._pending += len(vectors)
        while self._pending >= self.shard_rows:
            self._cut(self.shard_rows)

    def _take(self, pieces: list[np.ndarray], n: int) -> np.ndarray:
        """The first ``n`` rows of ``pieces`` (copied only when they span several pieces); removes them."""
        taken, count = [], 0
        while count < n:
            piece = pieces.pop(0)
            if count + len(piece) > n:
                pieces.insert(0, piece[n - count :])
                piece = piece[: n - count]
            taken.append(piece)
            count += len(piece)
        return taken[0] if len(taken) == 1 else np.concatenate(taken)

    def _cut(self, n: int) -> None:
        vectors, items = self._take(self._vectors, n), self._take(self._items, n)
        offset = sum(s.n_rows for s in self.shards)
        self.shards.append(Shard.build(vectors, items, self.n_clusters, self.seed + len(self.shards), offset, self.projection_dim))
        self._pending -= n

    def finish(self) -> list[Shard]:
        """The shards, the last one holding the remaining rows."""
        if self._pending:
            self._cut(self._pending)
        return self.shards
