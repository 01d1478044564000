"""Exact image-to-image distances for the audit, computed by brute force in float64.

The audit compares a release with several image sets (the training patients, a holdout, a control
set, the release itself), often in an embedding other than the guard's, so it computes what it needs
here rather than through a :class:`monai_pso.index.ReferenceIndex` built for one embedder and one
set. Distances follow the package contract: Euclidean between vectors (from differences, in float64, so an
exact copy is at distance 0.0), and between two images the minimum over the query image's valid
query-side vectors and the other image's valid reference-side vectors. Work is chunked so that
memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from monai_pso.data import ImageRecord, load_image
from monai_pso.embed.base import Embedder, Embedding
from monai_pso.embed.distance import image_distances
from monai_pso.errors import DataSourceError

#: Upper bound on the entries of one chunk of the vector distance matrix (float64: 32 MB).
CHUNK_ENTRIES = 4_000_000


@dataclass
class EmbeddedImages:
    """A set of images with their records and both sides of their embedding.

    Parameters
    ----------
    records
        One :class:`~monai_pso.data.ImageRecord` per image (patient and item ids, the image itself).
    reference
        Reference-side embedding (:meth:`Embedder.embed`), one entry per record.
    query
        Query-side embedding (:meth:`Embedder.embed_queries`), one entry per record.

    Examples
    --------
    >>> recs = [ImageRecord(f"i{k}", f"p{k // 2}", np.zeros((1, 2, 2), np.float32)) for k in range(4)]
    >>> e = Embedding.single(np.eye(4, dtype=np.float32))
    >>> s = EmbeddedImages(recs, e, e)
    >>> s.patients(), len(s.select_patients(["p1"]))
    (['p0', 'p1'], 2)
    """

    records: list[ImageRecord]
    reference: Embedding
    query: Embedding

    def __post_init__(self) -> None:
        if not (len(self.records) == len(self.reference) == len(self.query)):
            raise ValueError("records, reference and query embeddings must have one entry per image")

    def __len__(self) -> int:
        return len(self.records)

    @property
    def patient_ids(self) -> np.ndarray:
        return np.array([r.patient_id for r in self.records], dtype=object)

    def patients(self) -> list[str]:
        """Patient ids in order of first appearance."""
        return list(dict.fromkeys(r.patient_id for r in self.records))

    def subset(self, indices: Sequence[int] | np.ndarray) -> EmbeddedImages:
        """The images at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda e: Embedding(e.vectors[idx], e.valid[idx])  # noqa: E731
        return EmbeddedImages([self.records[i] for i in idx], pick(self.reference), pick(self.query))

    def select_patients(self, patients: Sequence[str]) -> EmbeddedImages:
        """Every image of the given patients."""
        wanted = set(patients)
        return self.subset([i for i, r in enumerate(self.records) if r.patient_id in wanted])


def _batches(records: Sequence[ImageRecord], batch_size: int) -> Iterator[np.ndarray]:
    """Loaded images stacked ``(B, 1, *spatial)``; a batch ends early where the image shape changes."""
    batch: list[np.ndarray] = []
    for record in records:
        image = load_image(record)
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield np.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield np.stack(batch)


def _pad_concat(parts: list[Embedding]) -> Embedding:
    """Concatenate batches whose vector counts ``T`` differ (images of different sizes) by padding."""
    width = max(p.vectors.shape[1] for p in parts)
    vectors, valid = [], []
    for part in parts:
        extra = width - part.vectors.shape[1]
        vectors.append(np.pad(part.vectors, ((0, 0), (0, extra), (0, 0))))
        valid.append(np.pad(part.valid, ((0, 0), (0, extra)), constant_values=False))
    return Embedding(np.concatenate(vectors).astype(np.float32), np.concatenate(valid))


def embed_records(
    records: Sequence[ImageRecord], embedder: Embedder, batch_size: int = 32, description: str = "embedding"
) -> EmbeddedImages:
    """Load and embed records on both sides (the query side only when the embedder defines its own).

    Examples
    --------
    >>> train = embed_records(load_source("phantom:2d?size=32").split("train").records, create_embedder("pixel"))  # doctest: +SKIP
    """
    if not records:
        raise DataSourceError(description, "no images to embed")
    own_queries = type(embedder).embed_queries is not Embedder.embed_queries
    references, queries = [], []
    with torch.no_grad():
        for images in tqdm(_batches(records, batch_size), desc=description, total=-(-len(records) // batch_size), leave=False):
            references.append(embedder.embed(images))
            if own_queries:
                queries.append(embedder.embed_queries(images))
    reference = _pad_concat(references)
    return EmbeddedImages(list(records), reference, _pad_concat(queries) if own_queries else reference)


def _subset(embedding: Embedding, start: int, stop: int) -> Embedding:
    return Embedding(embedding.vectors[start:stop], embedding.valid[start:stop])


def distance_matrix(queries: Embedding, references: Embedding) -> np.ndarray:
    """Image-to-image distances ``(Q, N)`` float64 (:func:`monai_pso.embed.distance.image_distances`).

    Computed in chunks of query images so that no chunk's vector distance matrix exceeds
    :data:`CHUNK_ENTRIES` entries.

    Examples
    --------
    >>> q = Embedding.single(np.array([[0.0, 0.0], [3.0, 4.0]], np.float32))
    >>> distance_matrix(q, q).tolist()
    [[0.0, 5.0], [5.0, 0.0]]
    """
    rows_per_image = max(1, int(queries.valid.sum(axis=1).max(initial=1)))
    step = max(1, CHUNK_ENTRIES // (rows_per_image * max(1, int(references.valid.sum()))))
    parts = [image_distances(_subset(queries, i, i + step), references) for i in range(0, len(queries), step)]
    return np.concatenate(parts) if parts else np.zeros((0, len(references)))


@dataclass(frozen=True)
class Nearest:
    """For each query image: the distance to its nearest reference image and that image's position."""

    distance: np.ndarray
    index: np.ndarray


def nearest(queries: EmbeddedImages, references: EmbeddedImages) -> Nearest:
    """Nearest reference image of each query image (query side against reference side).

    Examples
    --------
    >>> rec = lambda item: ImageRecord(item, "p", np.zeros((1, 2, 2), np.float32))
    >>> refs = Embedding.single(np.array([[0.0], [1.0], [3.0]], np.float32))
    >>> query = Embedding.single(np.array([[2.25]], np.float32))
    >>> found = nearest(EmbeddedImages([rec("q")], query, query), EmbeddedImages([rec("a"), rec("b"), rec("c")], refs, refs))
    >>> float(found.distance[0]), int(found.index[0])
    (0.75, 2)
    """
    matrix = distance_matrix(queries.query, references.reference)
    index = matrix.argmin(axis=1)
    return Nearest(matrix[np.arange(len(index)), index], index)


def patient_minimum(distances: np.ndarray, patient_ids: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per patient, the smallest of their images' distances (patients in order of first appearance).

    Examples
    --------
    >>> patient_minimum(np.array([3.0, 1.0, 2.0]), np.array(["a", "a", "b"], dtype=object))
    (['a', 'b'], array([1., 2.]))
    """
    patients = list(dict.fromkeys(patient_ids.tolist()))
    position = {p: i for i, p in enumerate(patients)}
    out = np.full(len(patients), np.inf)
    np.minimum.at(out, np.array([position[p] for p in patient_ids.tolist()], dtype=np.int64), distances)
    return patients, out
