"""Image-level questions on top of row-level search: what the guard asks.

An image embeds to one or more valid query vectors (tiles, flipped views); a training image to one or
more reference rows. The distance from an image to the training set is the smallest canonical distance
over all its valid query vectors and all reference rows; the nearest training item is the item owning the
row that attains it (ties: the smaller global row). It is searched grouped (``nearest_per_image``,
:mod:`monai_pso.index.groups`): all vectors of an image share one radius.

Examples
--------
>>> from monai_pso.embed.base import Embedding
>>> rows, owner = embedding_rows(Embedding.single(np.zeros((2, 4), np.float32)), dim=4)
>>> rows.shape, owner.tolist()
((2, 4), [0, 1])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from monai_pso.embed.base import Embedding
from monai_pso.errors import ImageValueError
from monai_pso.index.exact import check_finite_vectors


@dataclass
class NearestItems:
    """Per query image: its distance to the training set and the training item that attains it.

    Parameters
    ----------
    distance
        ``(B,)`` float64 canonical L2 distance (min over the image's valid query vectors).
    item
        ``(B,)`` int64 index of the nearest training item.
    item_id, patient_id
        That item's id and its patient's id, one per query image.
    row
        ``(B,)`` int64 global reference row attaining the distance.
    """

    distance: np.ndarray
    item: np.ndarray
    item_id: list[str]
    patient_id: list[str]
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.distance)


def embedding_rows(embedding: Embedding, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The valid query vectors of ``embedding`` ``(N, D)`` and the image each belongs to.

    Raises :class:`~monai_pso.errors.ImageValueError` when the dimension is not ``dim``, when an image has
    no valid vector, or when a value is not finite.
    """
    vectors, valid = np.asarray(embedding.vectors), np.asarray(embedding.valid, bool)
    if vectors.ndim != 3 or valid.shape != vectors.shape[:2]:
        raise ImageValueError(f"embedding: vectors {vectors.shape} and valid {valid.shape} must be (B, T, D) and (B, T)")
    if vectors.shape[-1] != dim:
        raise ImageValueError(
            f"embedding: vectors have dimension {vectors.shape[-1]}, the reference index has {dim} (another embedder?)"
        )
    empty = np.flatnonzero(~valid.any(axis=1))
    if len(empty):
        raise ImageValueError(f"embedding: images {empty[:5].tolist()} of the batch have no valid vector")
    return check_finite_vectors(embedding.rows(), "embedding"), embedding.row_owner()


class ItemQueries(ABC):
    """Image-level wrappers, for any object answering the row-level questions over a whole index."""

    item_ids: list[str]
    patient_ids: list[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Dimension of the reference vectors."""

    @abstractmethod
    def nearest(self, queries: np.ndarray, k: int = 1, strategy: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k`` nearest rows: float64 distances ``(Q, k)`` and global rows ``(Q, k)``."""

    @abstractmethod
    def nearest_per_image(self, queries: np.ndarray, owner: np.ndarray, strategy: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Per image (``owner``: image of each row, non-decreasing): the smallest float64 distance over its
        rows and all references, and the global row attaining it (ties: the smaller row); ``(B,)`` each."""

    @abstractmethod
    def any_within(self, queries: np.ndarray, tau: float, strategy: str = "auto") -> np.ndarray:
        """``(Q,)`` bool: some reference row lies at canonical distance ``< tau``."""

    @abstractmethod
    def item_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Item index of each global row (``-1`` for ``-1``)."""

    @abstractmethod
    def row_vectors(self, rows: np.ndarray) -> np.ndarray:
        """``(*rows.shape, D)`` float32 stored vector of each global row (zeros for ``-1``)."""

    def nearest_items(self, embedding: Embedding, strategy: str = "auto") -> NearestItems:
        """Per image of ``embedding``: distance to the nearest training row, and whose row it is.

        Examples
        --------
        >>> from monai_pso.index import ReferenceIndex
        >>> index = ReferenceIndex.from_vectors(np.eye(2, dtype=np.float32), [0, 1], ["a", "b"], ["p", "q"])
        >>> found = index.nearest_items(Embedding.single(np.array([[0.9, 0.0]], np.float32)))
        >>> found.item_id, found.patient_id
        (['a'], ['p'])
        """
        rows, owner = embedding_rows(embedding, self.dim)
        distances, hits = self.nearest_per_image(rows, owner, strategy=strategy)
        items = self.item_of_rows(hits)
        return NearestItems(
            distance=distances,
            item=items,
            item_id=[self.item_ids[i] for i in items],
            patient_id=[self.patient_ids[i] for i in items],
            row=hits,
        )

    def any_item_within(self, embedding: Embedding, tau: float, strategy: str = "auto") -> np.ndarray:
        """``(B,)`` bool: some valid vector of the image lies at canonical distance ``< tau`` of some row.

        Examples
        --------
        >>> from monai_pso.index import ReferenceIndex
        >>> index = ReferenceIndex.from_vectors(np.eye(2, dtype=np.float32), [0, 1], ["a", "b"], ["p", "q"])
        >>> index.any_item_within(Embedding.single(np.array([[0.9, 0.0], [5.0, 5.0]], np.float32)), 0.5).tolist()
        [True, False]
        """
        rows, owner = embedding_rows(embedding, self.dim)
        close = np.zeros(len(embedding), bool)
        close[owner[self.any_within(rows, tau, strategy=strategy)]] = True
        return close
