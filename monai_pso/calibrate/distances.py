"""The two distance distributions tau is calibrated from, one value per image, with the image's patient.

- **Held-out distances**: for each image of patients the index has never seen, its distance to the
  nearest training image (query side against the index, :func:`~monai_pso.index.query.nearest_training_items`).
- **Same-patient distances**: for each image of a patient with two or more images, its distance to the
  nearest *other* image of the same patient, with the same image-to-image definition (the minimum over
  the image's valid query-side vectors and the other image's valid reference-side vectors,
  :func:`~monai_pso.embed.distance.image_distances`; lowered by the embedder's pose refinement when it
  refines, as the guard's distance is). This is the distance the guard would see if the
  image were a synthetic one and the patient's other images were the training set: how close a
  re-acquisition of a person lies.

Examples
--------
>>> from monai_pso.data import load_source
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> src = load_source("phantom:2d?patients=4&acquisitions=3&size=16")
>>> same = same_patient_distances(PixelEmbedder(grid=8), src, progress=False)
>>> len(same), len(set(same.patients))
(12, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from monai_pso.data import DataSource, load_image, record_batches
from monai_pso.embed.base import Embedder
from monai_pso.embed.distance import image_distances
from monai_pso.embed.views import QueryViews, refines_poses
from monai_pso.errors import MIXED_SHAPES_HINT, ImageValueError
from monai_pso.index.query import check_image_batch, nearest_training_items


@dataclass(frozen=True)
class PatientDistances:
    """One distance per image and the patient it belongs to (the unit of the bootstrap).

    Examples
    --------
    >>> d = PatientDistances(np.array([1.0, 2.0, 3.0]), np.array(["a", "a", "b"]), ("src",))
    >>> len(d), d.n_patients, len(d.subset(np.array([True, False, True])))
    (3, 2, 2)
    """

    values: np.ndarray
    patients: np.ndarray
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.values)

    @property
    def n_patients(self) -> int:
        return len(set(self.patients.tolist()))

    def subset(self, keep: np.ndarray) -> PatientDistances:
        return PatientDistances(self.values[keep], self.patients[keep], self.sources)

    @classmethod
    def concat(cls, parts: Sequence[PatientDistances]) -> PatientDistances:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(np.zeros(0), np.zeros(0, dtype=str), ())
        return cls(
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.patients.astype(str) for p in parts]),
            tuple(s for p in parts for s in p.sources),
        )


def holdout_distances(
    index, embedder: Embedder, source: DataSource, views: QueryViews | None = None, batch_size: int = 64, progress: bool = True
) -> PatientDistances:
    """Distance of every image of ``source`` (with its extra ``views``) to the nearest training image of ``index``."""
    values, patients = [], []
    with tqdm(total=len(source), desc="Held-out distances", unit="img", disable=not progress) as bar:
        for chunk, images in record_batches(source.records, batch_size):
            values.append(np.asarray(nearest_training_items(index, embedder, images, views).distance, np.float64))
            patients.extend(r.patient_id for r in chunk)
            bar.update(len(chunk))
    return PatientDistances(np.concatenate(values), np.array(patients, dtype=str), (source.description,))


def same_patient_distances(
    embedder: Embedder, source: DataSource, views: QueryViews | None = None, index=None, progress: bool = True
) -> PatientDistances:
    """Per image of a patient with two or more images: the distance to that patient's nearest other image.

    Parameters
    ----------
    embedder
        The guard's embedder.
    source
        The images (patients with a single image are skipped).
    views
        Extra query-side views of each image (:class:`~monai_pso.embed.views.QueryViews`).
    index
        When given, images are checked to fit it (shape, dimensionality).
    """
    groups = [records for records in source.by_patient().values() if len(records) >= 2]
    values, patients = [], []
    for records in tqdm(groups, desc="Same-patient distances", unit="patient", disable=not progress):
        images = [load_image(r) for r in records]
        if len({image.shape for image in images}) > 1:
            raise ImageValueError(f"{source.description}: the images of patient {records[0].patient_id} differ in shape; {MIXED_SHAPES_HINT}")
        batch = check_image_batch(np.stack(images), index)
        with torch.no_grad():
            queries, references = (views or QueryViews()).embed(embedder, torch.from_numpy(batch)), embedder.embed(batch)
        matrix = image_distances(queries, references)
        if refines_poses(embedder, views):  # the pose refinement of the guard's decision
            every_other = np.broadcast_to(references.vectors[None, :, 0], (len(batch), *references.vectors[:, 0].shape))
            matrix = np.minimum(matrix, embedder.refine(torch.from_numpy(batch), queries, every_other))
        np.fill_diagonal(matrix, np.inf)
        values.append(matrix.min(axis=1))
        patients.extend(r.patient_id for r in records)
    if not values:
        return PatientDistances(np.zeros(0), np.zeros(0, dtype=str), (source.description,))
    return PatientDistances(np.concatenate(values), np.array(patients, dtype=str), (source.description,))
