"""Building a reference index from the training split of a SOURCE with an embedder.

Examples
--------
>>> import torch
>>> from monai_pso.embed.base import Embedder, Embedding
>>> class Flatten(Embedder):
...     name = "flatten"
...     settings = {"name": "flatten"}
...     def embed(self, images):
...         return Embedding.single(torch.as_tensor(images).flatten(1).numpy())
...     def save(self, directory):
...         pass
>>> index = build_index("phantom:2d?patients=4&acquisitions=2&size=16", Flatten(), progress=False)
>>> index.image_shape, index.dim, index.embedder.name
((16, 16), 256, 'flatten')
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from monai_pso.embed.base import Embedder, Embedding
from monai_pso.errors import MIXED_SHAPES_HINT, ConfigurationError, ImageValueError, IndexIntegrityError
from monai_pso.index.backends import Backend, exact_arithmetic
from monai_pso.index.exact import check_finite_vectors
from monai_pso.index.reference import EmbedderInfo, ReferenceIndex
from monai_pso.index.shard import ShardBuilder

if TYPE_CHECKING:  # the data layer (and MONAI) is imported when an index is built, not on import
    from monai_pso.data import DataSource, ImageRecord


def _batches(records: Sequence[ImageRecord], batch_size: int) -> Iterator[Sequence[ImageRecord]]:
    for start in range(0, len(records), batch_size):
        yield records[start : start + batch_size]


class _ShapeCheck:
    """Remembers the first image's shape and refuses any other, naming both items."""

    def __init__(self, location: str):
        self.location = location
        self.shape: tuple[int, ...] | None = None
        self.first_item = ""

    def __call__(self, record: ImageRecord, image: np.ndarray) -> None:
        if image.ndim not in (3, 4) or image.shape[0] != 1:
            raise ImageValueError(f"{self.location}: item {record.item_id!r} has shape {image.shape}, expected (1, *spatial) 2D or 3D")
        if self.shape is None:
            self.shape, self.first_item = image.shape, record.item_id
        elif image.shape != self.shape:
            raise ImageValueError(
                f"{self.location}: images must share one shape: item {record.item_id!r} is {image.shape[1:]}, "
                f"item {self.first_item!r} is {self.shape[1:]}; {MIXED_SHAPES_HINT}"
            )


def _embedding_rows(embedding: Embedding, records: Sequence[ImageRecord], location: str) -> tuple[np.ndarray, np.ndarray]:
    """Valid rows of a reference batch and, for each, the batch position of its image."""
    if len(embedding) != len(records) or embedding.valid.shape != embedding.vectors.shape[:2]:
        raise ImageValueError(f"{location}: the embedder returned {len(embedding)} images for a batch of {len(records)}")
    empty = [records[i].item_id for i in np.flatnonzero(~np.asarray(embedding.valid).any(axis=1))]
    if empty:
        raise ImageValueError(f"{location}: items {', '.join(map(repr, empty[:5]))} embed to no valid vector")
    names = ", ".join(r.item_id for r in records[:3])
    return check_finite_vectors(embedding.rows(), f"{location}: embeddings of items {names}..."), embedding.row_owner()


def build_index(
    source: str | DataSource,
    embedder: Embedder,
    split: str | None = "train",
    batch_size: int = 64,
    *,
    shard_rows: int | None = None,
    n_clusters: int | None = None,
    seed: int = 0,
    projection_dim: int | None = None,
    backend: str | Backend = "auto",
    progress: bool = True,
) -> ReferenceIndex:
    """Embed every image of ``split`` of ``source`` and index all valid rows.

    Parameters
    ----------
    source
        SOURCE string or loaded :class:`~monai_pso.data.DataSource`.
    embedder
        A fitted embedder; its :meth:`~monai_pso.embed.base.Embedder.embed` (reference side) is used.
    split
        Split to index (``None``: every record).
    batch_size
        Images embedded per call, as ``(B, 1, *spatial)`` float32 in ``[0, 1]``.
    shard_rows, n_clusters, seed, projection_dim
        Rows per shard (default: 1 GiB of vectors), k-means clusters per shard (default ``sqrt`` of its rows), k-means seed and
        directions of the projection filter (default ``D / 16`` clipped to 32..128 from dimension 128 up; 0 disables it).
    backend
        Backend the returned index searches with.
    progress
        Show a tqdm bar over images.

    Raises
    ------
    IndexIntegrityError
        When the split holds no image (an empty index is refused).
    ImageValueError
        When images differ in shape (both items are named) or embed to NaN / no valid vector.
    """
    from monai_pso.data import load_image, load_source

    data = load_source(source)
    chosen = data.split(split)
    if len(chosen) == 0:
        raise IndexIntegrityError(f"{chosen.description}: no images to index")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size={batch_size!r}: must be positive")
    check_shape = _ShapeCheck(chosen.description)
    builder = ShardBuilder(shard_rows, n_clusters, seed, projection_dim)
    records = chosen.records
    dim = None
    with tqdm(total=len(records), desc="Indexing", unit="img", disable=not progress) as bar:
        for offset, batch in zip(range(0, len(records), batch_size), _batches(records, batch_size)):
            images = []
            for record in batch:
                images.append(load_image(record))
                check_shape(record, images[-1])
            with exact_arithmetic():  # full float32 whatever autocast the caller runs in (as the query side)
                embedding = embedder.embed(np.stack(images))
            rows, owner = _embedding_rows(embedding, batch, chosen.description)
            if dim is not None and rows.shape[1] != dim:
                raise ImageValueError(f"{chosen.description}: the embedder changed dimension from {dim} to {rows.shape[1]}")
            dim = rows.shape[1]
            builder.add(rows, owner + offset)
            bar.update(len(batch))
    return ReferenceIndex(
        builder.finish(),
        [r.item_id for r in records],
        [r.patient_id for r in records],
        image_shape=check_shape.shape[1:],
        embedder=EmbedderInfo.of(embedder),
        source=chosen.description,
        backend=backend,
    )
