"""Exact reference index: every training embedding row, searched exactly (never approximately).

``build_index(source, embedder)`` embeds a SOURCE's training split; the returned
:class:`ReferenceIndex` answers ``nearest`` / ``any_within`` on rows and ``nearest_items`` /
``any_item_within`` on images, exactly with respect to float64 distances, with certified cluster pruning,
on faiss or torch backends (CPU or GPUs), sharded and memory-mapped, and saves/loads with sha256-checked
provenance. :class:`DistributedIndex` spreads shards over ``torch.distributed`` ranks. See ``docs/index.md``.
"""

from monai_pso.index.backends import Backend, available_backends, get_backend
from monai_pso.index.build import build_index
from monai_pso.index.distributed import DistributedIndex, shards_for_rank
from monai_pso.index.items import NearestItems
from monai_pso.index.reference import EmbedderInfo, ReferenceIndex

__all__ = [
    "Backend",
    "DistributedIndex",
    "EmbedderInfo",
    "NearestItems",
    "ReferenceIndex",
    "available_backends",
    "build_index",
    "get_backend",
    "shards_for_rank",
]
