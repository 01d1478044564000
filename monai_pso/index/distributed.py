"""One reference index spread over the ranks of a ``torch.distributed`` group.

Each rank loads a subset of the shards of a saved index (:func:`shards_for_rank`, round robin) and
searches them; per-query answers are then reduced over the group:

- ``nearest`` (``k = 1``): all-reduce MIN of the float64 distances, then all-reduce MIN of the rows of
  the ranks that attain it (the smaller row wins ties, as in one process); ``k > 1``: all-gather and merge;
- ``any_within``: all-reduce MAX of the per-rank hits (a logical OR);
- item lookup: every rank maps the rows it holds, all-reduce MAX.

Every rank must call each method with the same queries, in the same order (these are collectives).
CPU tensors are used with ``gloo``; with ``nccl`` the reductions run on the current CUDA device.

Examples
--------
>>> shards_for_rank(5, rank=1, world_size=2)
[1, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from monai_pso.embed.base import Embedder
from monai_pso.index.backends import Backend
from monai_pso.index.items import ItemQueries
from monai_pso.index.reference import ReferenceIndex
from monai_pso.index.search import TopK
from monai_pso.index.storage import read_manifest

_NO_ROW = np.iinfo(np.int64).max


def shards_for_rank(n_shards: int, rank: int, world_size: int) -> list[int]:
    """The shard numbers rank ``rank`` of ``world_size`` holds: ``rank, rank + world_size, ...``."""
    return list(range(rank, n_shards, world_size))


class DistributedIndex(ItemQueries):
    """Row- and image-level exact search over shards spread across a process group.

    Parameters
    ----------
    local
        This rank's part of the index (:meth:`ReferenceIndex.load` with ``shards=``).
    group
        The process group (default: the world).
    """

    def __init__(self, local: ReferenceIndex, group: dist.ProcessGroup | None = None):
        self.local = local
        self.group = group
        self.item_ids = local.item_ids
        self.patient_ids = local.patient_ids

    @classmethod
    def load(
        cls,
        directory: str | Path,
        embedder: Embedder | None = None,
        mmap: bool = True,
        backend: str | Backend = "auto",
        group: dist.ProcessGroup | None = None,
    ) -> DistributedIndex:
        """Load this rank's shards of the index in ``directory`` (sha256-verified, fingerprint-checked)."""
        n_shards = read_manifest(directory)["counts"]["shards"]
        mine = shards_for_rank(n_shards, dist.get_rank(group), dist.get_world_size(group))
        return cls(ReferenceIndex.load(directory, embedder=embedder, mmap=mmap, backend=backend, shards=mine), group)

    @property
    def dim(self) -> int:
        return self.local.dim

    def check_compatible(self, image_shape: Sequence[int], embedder: Embedder | None = None) -> None:
        """See :meth:`ReferenceIndex.check_compatible`."""
        self.local.check_compatible(image_shape, embedder)

    def _device(self) -> torch.device:
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _all_reduce(self, array: np.ndarray, op: dist.ReduceOp) -> np.ndarray:
        tensor = torch.tensor(np.asarray(array), device=self._device())  # a copy: the reduction works in place
        dist.all_reduce(tensor, op=op, group=self.group)
        return tensor.cpu().numpy()

    def _all_gather(self, array: np.ndarray) -> list[np.ndarray]:
        tensor = torch.as_tensor(np.ascontiguousarray(array), device=self._device())
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(parts, tensor, group=self.group)
        return [p.cpu().numpy() for p in parts]

    def nearest(self, queries: np.ndarray, k: int = 1, strategy: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k`` nearest rows over the whole group (see :meth:`ReferenceIndex.nearest`)."""
        distances, rows = self.local.nearest(queries, k=k, strategy=strategy)
        if k == 1:
            best, rows = self._min_over_ranks(distances[:, 0], rows[:, 0])
            return best[:, None], rows[:, None]
        merged = TopK(len(distances), k)
        for part_distances, part_rows in zip(self._all_gather(distances), self._all_gather(rows)):
            found = part_rows >= 0
            merged.offer(np.nonzero(found)[0], part_rows[found], part_distances[found])
        return merged.distances, merged.rows

    def nearest_per_image(self, queries: np.ndarray, owner: np.ndarray, strategy: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Exact per-image nearest row over the whole group (see :meth:`ReferenceIndex.nearest_per_image`)."""
        distances, rows = self.local.nearest_per_image(queries, owner, strategy=strategy)
        return self._min_over_ranks(distances, rows)

    def _min_over_ranks(self, distances: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All-reduce MIN of the distances, then MIN of the rows of the ranks attaining it (``-1``: none)."""
        best = self._all_reduce(distances, dist.ReduceOp.MIN)
        mine = np.where((distances == best) & (rows >= 0), rows, _NO_ROW)
        rows = self._all_reduce(mine, dist.ReduceOp.MIN)
        rows[rows == _NO_ROW] = -1
        return best, rows

    def any_within(self, queries: np.ndarray, tau: float, strategy: str = "auto") -> np.ndarray:
        """Exact range decision over the whole group (see :meth:`ReferenceIndex.any_within`)."""
        hits = self.local.any_within(queries, tau, strategy=strategy).astype(np.int64)
        return self._all_reduce(hits, dist.ReduceOp.MAX) > 0

    def item_of_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._all_reduce(self.local.item_of_rows(rows), dist.ReduceOp.MAX)

    def row_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of global rows over the whole group (each row is held by one rank, zeros elsewhere)."""
        return self._all_reduce(self.local.row_vectors(rows), dist.ReduceOp.SUM)
