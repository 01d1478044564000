"""The reference index: every valid embedding row of every training image, searched exactly.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> vectors = rng.normal(size=(100, 16)).astype(np.float32)
>>> index = ReferenceIndex.from_vectors(vectors, np.arange(100) // 2, [f"i{j}" for j in range(50)], ["p"] * 50)
>>> distances, rows = index.nearest(vectors[:3] + 0.01, k=1)
>>> rows[:, 0].tolist(), index.any_within(vectors[:3] + 0.01, tau=0.1).tolist()
([0, 1, 2], [True, True, True])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_pso.embed.base import Embedder
from monai_pso.errors import ConfigurationError, FingerprintMismatchError, ImageValueError, IndexIntegrityError
from monai_pso.index.backends import Backend, exact_arithmetic, get_backend
from monai_pso.index.exact import check_finite_vectors
from monai_pso.index.groups import NearestPerImage, ViewGroups, group_starts
from monai_pso.index.items import ItemQueries
from monai_pso.index.search import STRATEGIES, AnyWithin, Queries, SearchState, ShardSearcher, TopK
from monai_pso.index.shard import Shard, ShardBuilder

#: Queries searched together (bounds the ``(queries, clusters)`` arrays of pruned search).
QUERY_CHUNK = 1024


@dataclass(frozen=True)
class EmbedderInfo:
    """Provenance of the vectors: which embedder, with which settings (written into the manifest).

    Examples
    --------
    >>> EmbedderInfo("pixel", "ab12", {"size": 16}).name
    'pixel'
    """

    name: str
    fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, embedder: Embedder) -> EmbedderInfo:
        return cls(embedder.name or type(embedder).__name__, embedder.fingerprint, dict(embedder.settings))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReferenceIndex(ItemQueries):
    """Reference rows of the training images, in shards, with exact ``nearest`` and ``any_within``.

    Build one with :func:`monai_pso.index.build_index` (from a SOURCE and an embedder) or
    :meth:`from_vectors`; save with :meth:`save`, load with :meth:`load`.

    Parameters
    ----------
    shards
        The shards (all of the index, or a subset when loaded for one process of a distributed group).
    item_ids, patient_ids
        Per training item (image): its id and its patient's id.
    image_shape
        Spatial shape of the images the index was built from (``None`` when built from bare vectors).
    embedder
        Provenance of the vectors (``None`` when built from bare vectors).
    source
        Description of the data the rows come from.
    backend
        Backend name or object (see :mod:`monai_pso.index.backends`).
    total_rows
        Rows of the whole index when ``shards`` is a subset (default: the rows of ``shards``).
    manifest
        The manifest the index was loaded from, if any.
    fingerprint
        The content fingerprint when it is known (the one recorded in the manifest, checked by
        :func:`~monai_pso.index.storage.read_index` against the shards' digests; needed for an index loaded
        in part); default: computed from the shards' arrays when first asked for.
    """

    def __init__(
        self,
        shards: Sequence[Shard],
        item_ids: Sequence[str],
        patient_ids: Sequence[str],
        *,
        image_shape: Sequence[int] | None = None,
        embedder: EmbedderInfo | None = None,
        source: str = "",
        backend: str | Backend = "auto",
        total_rows: int | None = None,
        manifest: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ):
        self.shards = list(shards)
        self.item_ids = [str(i) for i in item_ids]
        self.patient_ids = [str(p) for p in patient_ids]
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        self.embedder = embedder
        self.source = source
        self.total_rows = int(total_rows if total_rows is not None else sum(s.n_rows for s in self.shards))
        self.manifest = manifest
        self._fingerprint = fingerprint
        self._dim = self.shards[0].dim if self.shards else int((manifest or {}).get("dim", 0))
        self._check_consistent()
        self.use_backend(backend)

    def _check_consistent(self) -> None:
        where = self.source or "reference index"
        if self.total_rows == 0:
            raise IndexIntegrityError(f"{where}: the index holds no reference rows")
        if len(self.item_ids) != len(self.patient_ids):
            raise IndexIntegrityError(f"{where}: {len(self.item_ids)} item ids but {len(self.patient_ids)} patient ids")
        for shard in self.shards:
            if shard.dim != self._dim:
                raise IndexIntegrityError(f"{where}: shards of dimension {shard.dim} and {self._dim}")
            if shard.row_item.min() < 0 or shard.row_item.max() >= len(self.item_ids):
                raise IndexIntegrityError(f"{where}: rows refer to items outside 0..{len(self.item_ids) - 1}")

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        row_item: Sequence[int] | np.ndarray,
        item_ids: Sequence[str],
        patient_ids: Sequence[str],
        *,
        image_shape: Sequence[int] | None = None,
        embedder: EmbedderInfo | Embedder | None = None,
        source: str = "vectors",
        shard_rows: int | None = None,
        n_clusters: int | None = None,
        seed: int = 0,
        projection_dim: int | None = None,
        backend: str | Backend = "auto",
    ) -> ReferenceIndex:
        """An index over ``vectors`` ``(N, D)``, row ``i`` belonging to item ``row_item[i]``.

        ``shard_rows`` defaults to 1 GiB of vectors per shard; ``n_clusters`` is per shard (default ``sqrt`` of its rows); ``projection_dim`` the directions of the
        projection filter (default ``D / 16`` clipped to 32..128 from dimension 128 up, 0 disables it).

        Examples
        --------
        >>> index = ReferenceIndex.from_vectors(np.zeros((4, 3), np.float32), [0, 0, 1, 1], ["a", "b"], ["p", "p"])
        >>> index.n_rows, index.n_items, index.dim
        (4, 2, 3)
        """
        vectors = check_finite_vectors(vectors, source)
        if len(vectors) == 0:
            raise IndexIntegrityError(f"{source}: no reference rows to index")
        builder = ShardBuilder(shard_rows, n_clusters, seed, projection_dim)
        builder.add(vectors, np.asarray(row_item, np.int64))
        if isinstance(embedder, Embedder):
            embedder = EmbedderInfo.of(embedder)
        return cls(builder.finish(), item_ids, patient_ids, image_shape=image_shape, embedder=embedder, source=source, backend=backend)

    def use_backend(self, backend: str | Backend) -> ReferenceIndex:
        """Search with ``backend`` from now on (rows are placed on it lazily); returns ``self``."""
        self.backend = get_backend(backend)
        self._searchers: list[ShardSearcher] | None = None
        return self

    # -- sizes -------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def n_rows(self) -> int:
        """Rows held here (all rows, unless this is one process's part of a distributed index)."""
        return sum(s.n_rows for s in self.shards)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_patients(self) -> int:
        return len(set(self.patient_ids))

    @property
    def fingerprint(self) -> str:
        """sha256 of the index's content, computed once: what a threshold or a release belongs to.

        Covers the embedder fingerprint, the dimension, the image shape, the item and patient ids, each
        shard's rows and row offset, and every array a search reads (:data:`~monai_pso.index.shard.SHARD_ARRAYS`:
        vectors, row ids and items, norms, centroids, cluster offsets and member distances, the projection
        and the projected rows), through their digests (:attr:`~monai_pso.index.shard.Shard.array_digests`,
        recorded per shard in the manifest). So the same index in memory and saved and loaded again has
        the same fingerprint, and any change to what a search reads changes it. Recorded in the manifest at
        save, checked at load (also by a process loading only some shards: against the recorded digests).

        Examples
        --------
        >>> a = ReferenceIndex.from_vectors(np.eye(2, dtype=np.float32), [0, 1], ["a", "b"], ["p", "q"])
        >>> b = ReferenceIndex.from_vectors(2 * np.eye(2, dtype=np.float32), [0, 1], ["a", "b"], ["p", "q"])
        >>> a.fingerprint == a.fingerprint != b.fingerprint
        True
        """
        if self._fingerprint is None:
            self._fingerprint = self._content_digest()
        return self._fingerprint

    def _content_digest(self) -> str:
        if self.n_rows != self.total_rows:
            raise IndexIntegrityError(
                f"{self.source}: {self.n_rows} of {self.total_rows} rows are loaded and no fingerprint is recorded; load the whole index to fingerprint it"
            )
        return self.fingerprint_of_shards([{"rows": s.n_rows, "row_offset": s.row_offset, "arrays": s.array_digests} for s in self.shards])

    def fingerprint_of_shards(self, shards: Sequence[Mapping[str, Any]]) -> str:
        """The content fingerprint from a record per shard of the whole index: ``rows``, ``row_offset`` and
        ``arrays`` (the :attr:`~monai_pso.index.shard.Shard.array_digests`), as the manifest lists them.

        With the shards' own records it is :attr:`fingerprint`; with the manifest's, it lets a process that
        loaded some shards (whose digests were checked against the manifest) check the recorded fingerprint.
        """
        header = {
            "embedder": getattr(self.embedder, "fingerprint", None),
            "dim": int(self.dim),
            "image_shape": list(self.image_shape) if self.image_shape is not None else None,
            "item_ids": list(self.item_ids),
            "patient_ids": list(self.patient_ids),
            "rows": [int(s["rows"]) for s in shards],
            "row_offsets": [int(s["row_offset"]) for s in shards],
        }
        digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for shard in shards:
            digest.update(json.dumps(dict(shard["arrays"]), sort_keys=True).encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"ReferenceIndex(rows={self.n_rows}, items={self.n_items}, dim={self.dim}, shards={len(self.shards)}, "
            f"image_shape={self.image_shape}, backend={self.backend.name!r})"
        )

    # -- checks ------------------------------------------------------------------------------------

    def check_embedder(self, embedder: Embedder | EmbedderInfo) -> None:
        """Raise :class:`FingerprintMismatchError` unless ``embedder`` made this index's vectors."""
        theirs = embedder.fingerprint
        if self.embedder is None:
            raise FingerprintMismatchError(f"{self.source}: the index records no embedder, cannot check fingerprint {theirs}")
        if theirs != self.embedder.fingerprint:
            raise FingerprintMismatchError(
                f"{self.source}: index built with embedder {self.embedder.name!r} fingerprint {self.embedder.fingerprint}, "
                f"queries embedded with fingerprint {theirs}"
            )

    def check_compatible(self, image_shape: Sequence[int], embedder: Embedder | EmbedderInfo | None = None) -> None:
        """Refuse query images of another spatial shape (or dimensionality), or another embedder.

        Parameters
        ----------
        image_shape
            Spatial shape of the query images: ``image.shape[1:]`` of one ``(1, *spatial)`` image,
            ``batch.shape[2:]`` of a batch.
        embedder
            When given, its fingerprint must be the index's.

        Examples
        --------
        >>> index = ReferenceIndex.from_vectors(np.zeros((1, 4), np.float32), [0], ["a"], ["p"], image_shape=(2, 2))
        >>> index.check_compatible((2, 2))
        >>> index.check_compatible((2, 2, 2))
        Traceback (most recent call last):
        ...
        monai_pso.errors.ImageValueError: query images are 3D (2, 2, 2), the reference index (vectors) was built for 2D images (2, 2)
        """
        shape = tuple(int(s) for s in image_shape)
        if self.image_shape is not None and shape != self.image_shape:
            raise ImageValueError(
                f"query images are {len(shape)}D {shape}, the reference index ({self.source}) was built for "
                f"{len(self.image_shape)}D images {self.image_shape}"
            )
        if embedder is not None:
            self.check_embedder(embedder)

    def _checked(self, queries: np.ndarray) -> np.ndarray:
        queries = check_finite_vectors(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ImageValueError(f"queries have dimension {queries.shape[1]}, the reference index has {self.dim}")
        return queries

    # -- search ------------------------------------------------------------------------------------

    def searchers(self) -> list[ShardSearcher]:
        """One searcher per shard, placing the shard on the backend (GPU ``i % n`` for shard ``i``)."""
        if self._searchers is None:
            self._searchers = [ShardSearcher(s, self.backend, slot=i) for i, s in enumerate(self.shards)]
        return self._searchers

    def _run(self, queries: np.ndarray, make_state, strategy: str, method: str) -> list[SearchState]:
        if strategy not in STRATEGIES:
            raise ConfigurationError(f"strategy={strategy!r}: must be one of {STRATEGIES}")
        states = []
        with exact_arithmetic():  # the backends enter it on every call too; once here makes those entries free
            for start in range(0, len(queries), QUERY_CHUNK):
                block = Queries.of(queries[start : start + QUERY_CHUNK])
                state = make_state(len(block))
                for searcher in self.searchers():
                    getattr(searcher, method)(block, state, strategy)
                states.append(state)
        return states

    def nearest(self, queries: np.ndarray, k: int = 1, strategy: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k`` nearest reference rows of each query.

        Parameters
        ----------
        queries
            ``(Q, D)`` float32 vectors.
        k
            Neighbours per query; when the index holds fewer rows, missing ones read ``inf`` / ``-1``.
        strategy
            ``"pruned"`` (cluster pruning), ``"flat"`` (certified float32 k-NN) or ``"auto"`` (pruned for
            shards of 50,000 rows or more); all give the same answers.

        Returns
        -------
        distances, rows
            ``(Q, k)`` float64 canonical L2 distances (not squared), ascending, and ``(Q, k)`` int64 global
            rows (ties: the smaller row first).
        """
        if k < 1:
            raise ConfigurationError(f"k={k!r}: must be at least 1")
        queries = self._checked(queries)
        states = self._run(queries, lambda n: TopK(n, k), strategy, "nearest")
        if not states:
            return np.zeros((0, k)), np.zeros((0, k), np.int64)
        return np.concatenate([s.distances for s in states]), np.concatenate([s.rows for s in states])

    def nearest_per_image(self, queries: np.ndarray, owner: np.ndarray, strategy: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Per image: the exact smallest distance over its query vectors and all rows, and the row attaining it.

        Images are searched in blocks of whole images (about :data:`QUERY_CHUNK` vectors). An image with one
        vector gets its exact 1-NN (``strategy``: ``pruned`` or ``flat``, see :meth:`nearest`; ``auto`` is
        ``flat`` here, since for few vectors the per-cluster work of pruned search costs more than it saves).
        An image with several shares one radius over all its vectors. On a shard of
        :data:`~monai_pso.index.search.AUTO_GROUPED_MIN_ROWS` rows or more (``auto``; every shard with
        ``pruned``) it is seeded (:meth:`~monai_pso.index.search.ShardSearcher.seed_per_image`: an achieved
        distance near its first vector's nearest, which also sizes its pivot cover,
        :class:`~monai_pso.index.groups.ViewGroups`) and searched grouped
        (:meth:`~monai_pso.index.search.ShardSearcher.nearest_per_image`); on smaller shards (``auto``; every
        shard with ``flat``) every vector is measured against every row in one float32 pass
        (:meth:`~monai_pso.index.search.ShardSearcher.nearest_per_image_flat`), where pivots cost more than
        they save (``flat_queries_per_s`` and ``grouped_queries_per_s`` of ``benchmarks/results/index_cpu.json``).
        No strategy changes an answer.

        Parameters
        ----------
        queries
            ``(Q, D)`` float32 vectors, each image's vectors contiguous.
        owner
            ``(Q,)`` non-decreasing image number of each vector (``0..B-1``, every image present).

        Returns
        -------
        distance, row
            ``(B,)`` float64 canonical distances and ``(B,)`` int64 global rows (ties: the smaller row);
            the same as the per-vector :meth:`nearest` minimised per image.

        Examples
        --------
        >>> index = ReferenceIndex.from_vectors(np.eye(3, dtype=np.float32), [0, 1, 2], ["a", "b", "c"], ["p"] * 3)
        >>> distance, row = index.nearest_per_image(np.array([[0, 0, 2], [0.9, 0, 0], [0, 1, 0]], np.float32), np.array([0, 0, 1]))
        >>> row.tolist(), distance.round(3).tolist()
        ([0, 1], [0.1, 0.0])
        """
        if strategy not in STRATEGIES:
            raise ConfigurationError(f"strategy={strategy!r}: must be one of {STRATEGIES}")
        queries = self._checked(queries)
        owner = np.asarray(owner, np.int64)
        starts = group_starts(owner)
        if owner.shape != (len(queries),) or (len(owner) and (owner[0] != 0 or np.any(np.diff(owner[starts[:-1]]) != 1))):
            raise ImageValueError(f"owner: expected {len(queries)} non-decreasing image numbers 0, 1, ... without gaps")
        distance, row = np.full(len(starts) - 1, np.inf), np.full(len(starts) - 1, -1, np.int64)
        with exact_arithmetic():
            first = 0
            while first < len(starts) - 1:
                last = max(first + 1, int(np.searchsorted(starts, starts[first] + QUERY_CHUNK, side="right")) - 1)
                last = min(last, len(starts) - 1)
                lo, hi = int(starts[first]), int(starts[last])
                distance[first:last], row[first:last] = self._nearest_image_block(queries[lo:hi], owner[lo:hi] - first, last - first, strategy)
                first = last
        return distance, row

    def _nearest_image_block(self, vectors: np.ndarray, owner: np.ndarray, n_images: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`nearest_per_image` of one block of whole images (``owner`` numbered from 0)."""
        starts = group_starts(owner)
        sizes = np.diff(starts)
        distance, row = np.full(n_images, np.inf), np.full(n_images, -1, np.int64)
        single = np.flatnonzero(sizes == 1)
        if len(single):  # one vector: its exact 1-NN is the answer
            nearest = TopK(len(single), 1)
            for searcher in self.searchers():
                searcher.nearest(Queries.of(vectors[starts[single]]), nearest, "flat" if strategy == "auto" else strategy)
            distance[single], row[single] = nearest.distances[:, 0], nearest.rows[:, 0]
        images = np.flatnonzero(sizes > 1)
        if len(images):
            several = np.repeat(sizes > 1, sizes)
            block = Queries.of(vectors[several])
            state = NearestPerImage(owner[several], n_images)
            if any(searcher.groups_pay(strategy) for searcher in self.searchers()):  # pivots need seeds and a cover
                for searcher in self.searchers():
                    searcher.seed_per_image(block, group_starts(state.owner)[:-1], state)
                groups = ViewGroups.cover(block, state.owner, ViewGroups.cover_radius(block, state.owner, state.distance))
            for searcher in self.searchers():
                if searcher.groups_pay(strategy):
                    searcher.nearest_per_image(block, groups, state)
                else:
                    searcher.nearest_per_image_flat(block, state)
            distance[images], row[images] = state.distance[images], state.row[images]
        return distance, row

    def any_within(self, queries: np.ndarray, tau: float, strategy: str = "auto") -> np.ndarray:
        """``(Q,)`` bool: some reference row lies at canonical L2 distance strictly below ``tau``.

        Exact with respect to float64 distances; stops searching a query at its first hit.
        """
        tau = float(tau)
        if not np.isfinite(tau) or tau < 0:
            raise ConfigurationError(f"tau={tau!r}: must be a finite non-negative number")
        queries = self._checked(queries)
        states = self._run(queries, lambda n: AnyWithin(n, tau), strategy, "any_within")
        return np.concatenate([s.hit for s in states]) if states else np.zeros(0, bool)

    def item_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Item index of each global row held here; ``-1`` for ``-1`` and for rows of shards not held.

        Examples
        --------
        >>> index = ReferenceIndex.from_vectors(np.eye(3, dtype=np.float32), [0, 1, 1], ["a", "b"], ["p", "p"])
        >>> index.item_of_rows(index.nearest(np.eye(3, dtype=np.float32))[1][:, 0]).tolist()
        [0, 1, 1]
        """
        rows = np.asarray(rows, np.int64)
        items = np.full(rows.shape, -1, np.int64)
        for shard in self.shards:
            inside = (rows >= shard.row_offset) & (rows < shard.row_offset + shard.n_rows)
            items[inside] = shard.row_item[rows[inside] - shard.row_offset]
        return items

    def row_vectors(self, rows: np.ndarray) -> np.ndarray:
        """``(*rows.shape, D)`` float32: the stored vector of each global row held here (zeros for others and ``-1``).

        Examples
        --------
        >>> index = ReferenceIndex.from_vectors(np.arange(6, dtype=np.float32).reshape(3, 2), [0, 1, 2], ["a", "b", "c"], ["p"] * 3)
        >>> index.row_vectors(np.array([2, 0])).tolist()
        [[4.0, 5.0], [0.0, 1.0]]
        """
        rows = np.asarray(rows, np.int64)
        vectors = np.zeros(rows.shape + (self.dim,), np.float32)
        for shard in self.shards:
            inside = (rows >= shard.row_offset) & (rows < shard.row_offset + shard.n_rows)
            vectors[inside] = shard.vectors[shard.position_of_row[rows[inside] - shard.row_offset]]
        return vectors

    # -- persistence -------------------------------------------------------------------------------

    def save(self, directory: str | Path, keep_ledger: bool = False) -> Path:
        """Write the index to ``directory`` atomically (see :mod:`monai_pso.index.storage`).

        An index folder there that holds a release ledger is replaced only with ``keep_ledger=True``,
        which carries the ledger into the new index.
        """
        from monai_pso.index.storage import write_index

        return write_index(self, directory, keep_ledger=keep_ledger)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        embedder: Embedder | None = None,
        mmap: bool = True,
        backend: str | Backend = "auto",
        shards: Sequence[int] | None = None,
    ) -> ReferenceIndex:
        """Read an index written by :meth:`save`, verifying every file's sha256.

        Parameters
        ----------
        directory
            The index folder.
        embedder
            When given, its fingerprint must match (:class:`FingerprintMismatchError` otherwise).
        mmap
            Memory-map the vectors instead of reading them.
        backend
            Backend to search with.
        shards
            Load only these shard numbers (one process of a distributed group); default all.
        """
        from monai_pso.index.storage import read_index

        return read_index(directory, embedder=embedder, mmap=mmap, backend=backend, shards=shards)
