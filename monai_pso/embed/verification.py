"""How well an embedder tells patients apart: the verification AUC on held-out patients.

Pairs of images of the same patient (positives) and of different patients (negatives) are scored by
minus their privacy distance (query side of one image to reference side of the other, see
:func:`~monai_pso.embed.distance.image_distances`); the AUC is
:func:`sklearn.metrics.roc_auc_score` of same-patient against that score: the probability that a
random same-patient pair is closer than a random different-patient pair (0.5 is chance). A patient
with a single image (MedMNIST) contributes the pair (image, an augmented view of it) instead.

Examples
--------
>>> import numpy as np, torch
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> images = torch.rand(4, 1, 16, 16)
>>> images[1] = images[0] * 0.98; images[3] = images[2] * 0.98
>>> verification_auc(PixelEmbedder(flip_axes=[]), images, ["a", "a", "b", "b"])
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from monai_pso.embed.base import Embedder
from monai_pso.embed.distance import image_distances


def verification_auc(
    embedder: Embedder,
    images: torch.Tensor,
    patients: Sequence[str],
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float | None:
    """Same-patient versus different-patient AUC over all pairs of ``images`` (``None`` if undefined).

    Parameters
    ----------
    embedder
        What is evaluated.
    images
        ``(N, 1, *spatial)`` held-out images.
    patients
        Patient id of each image.
    augment
        Makes second views of a batch of images (for patients with one image, who are left out when
        ``None``).

    Returns
    -------
    The AUC in ``[0, 1]``, or ``None`` when there is no positive or no negative pair.
    """
    patients = np.asarray(patients)
    singles = [i for i, p in enumerate(patients) if (patients == p).sum() == 1] if augment is not None else []
    distances = image_distances(embedder.embed_queries(images), embedder.embed(images))
    upper = np.triu(np.ones_like(distances, dtype=bool), k=1)
    same = patients[:, None] == patients[None, :]
    scores = [-distances[upper & same], -distances[upper & ~same]]
    if singles:
        views = augment(images[singles])
        scores[0] = np.concatenate([scores[0], -image_distances(embedder.embed_queries(views), embedder.embed(images[singles])).diagonal()])
    if not len(scores[0]) or not len(scores[1]):
        return None
    labels = np.concatenate([np.ones(len(scores[0])), np.zeros(len(scores[1]))])
    return float(roc_auc_score(labels, np.concatenate(scores)))
