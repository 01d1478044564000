"""How well an embedder tells patients apart: the verification AUC on held-out patients, two ways.

:func:`nearest_reference_auc` measures it as the guard decides (1:N against a reference set, see its
docstring); :func:`verification_auc` compares pairs (1:1), which flatters an embedder that only finds
near-copies (a child's repeat X-rays of one admission), and is kept as the classic figure.

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


def guard_style_split(patients: Sequence[str], seed: int = 0, trained_share: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split images into a reference set and probes, as a guard meets them.

    Patients with two or more images are drawn at random into "trained" (``trained_share`` of them:
    one image is a probe, their other images join the reference) and "unseen" (every image is a
    probe); single-image patients join the reference as strangers.

    Returns
    -------
    reference, probe, trained
        ``(N,)`` bool masks over the images: in the reference set; a probe; a probe of a trained patient.

    Examples
    --------
    >>> reference, probe, trained = guard_style_split(["a", "a", "b", "b", "c"], seed=0)
    >>> int(reference.sum() + probe.sum()), int(trained.sum()), bool((reference & probe).any())
    (5, 1, False)
    """
    patients = np.asarray(patients)
    names, counts = np.unique(patients, return_counts=True)
    repeated = np.random.default_rng(seed).permutation(names[counts >= 2])
    chosen = set(repeated[: int(round(trained_share * len(repeated)))].tolist())
    reference, probe, trained = np.zeros(len(patients), bool), np.zeros(len(patients), bool), np.zeros(len(patients), bool)
    for name in names:
        positions = np.flatnonzero(patients == name)
        if len(positions) < 2:
            reference[positions] = True
        elif name in chosen:
            trained[positions[-1]] = probe[positions[-1]] = True
            reference[positions[:-1]] = True
        else:
            probe[positions] = True
    return reference, probe, trained


def nearest_distances(embedder: Embedder, probes: torch.Tensor, reference: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """``(P,)`` each probe's distance (query views) to its nearest reference image (exact, in chunks)."""
    references = embedder.embed(reference)
    return np.concatenate([image_distances(embedder.embed_queries(chunk), references).min(axis=1) for chunk in probes.split(batch_size)])


def nearest_reference_auc(embedder: Embedder, images: torch.Tensor, patients: Sequence[str], seed: int = 0) -> float | None:
    """AUC of identity as the guard decides: a probe's nearest distance to a reference set (1:N).

    The images are split by :func:`guard_style_split`; the AUC is the probability that a trained
    patient's probe (a new image of someone in the reference set) lies nearer the reference set than an
    unseen patient's probe (0.5: the embedder cannot tell them apart). ``None`` when either kind of probe
    is missing.

    Examples
    --------
    >>> from monai_pso.embed.pixel import PixelEmbedder
    >>> images = torch.rand(6, 1, 16, 16)
    >>> images[1::2] = images[::2] * 0.97  # each patient's second image: a re-exposure of the first
    >>> nearest_reference_auc(PixelEmbedder(flip_axes=[]), images, ["a", "a", "b", "b", "c", "c"], seed=1)
    1.0
    """
    reference, probe, trained = guard_style_split(patients, seed)
    if not trained.any() or not (probe & ~trained).any():
        return None
    distances = nearest_distances(embedder, images[probe], images[reference])
    return float(roc_auc_score(trained[probe], -distances))
