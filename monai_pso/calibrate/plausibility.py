"""Calibrating the plausibility radius: how far from the real data is too far to be a plausible image?

The guard's copy checks ask "too close to a training image?"; a generator's failures (blurred blobs,
noise) lie far from everything and pass them. The plausibility check asks the other question, in a
fidelity embedding (:mod:`monai_pso.embed.fidelity`, never the copy checks' pixel embedding): an image
is measured by its distance to its ``k``-th nearest *distinct* training image (the k-NN radius of
Naeem et al. 2020's precision/recall manifolds, exact search in a :class:`~monai_pso.index.ReferenceIndex`,
:func:`kth_nearest_distances`), and refused as ``implausible`` when that distance exceeds the radius.

The radius is calibrated like tau (:mod:`monai_pso.calibrate.calibration`), on held-out real images
(patients not in the index), measured exactly as a draw is, by the split-conformal rule (Vovk et al.
2005; Lei et al. 2018): of ``n`` held-out k-NN distances, the ``ceil((n + 1) * (1 - max_refused))``-th
smallest (:func:`conformal_radius`). A new real image exchangeable with the held-out ones then lies
beyond it with probability at most ``max_refused`` (default 5%); images of one patient are not
independent, so read it as approximate, with the intervals. The rule needs
``n >= (1 - max_refused) / max_refused`` held-out images (19 at 5%; :func:`min_holdout_images`):
with fewer, no order statistic gives the guarantee and calibration refuses (``build_guard`` then
leaves the check out and records why). A patient-bootstrap interval is given for the radius and for
the share of held-out real images it refuses (``refused_share``, in-sample, at most ``max_refused``).

Examples
--------
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> from monai_pso.index import build_index
>>> src = "phantom:2d?patients=40&acquisitions=4&size=24"
>>> embedder = PixelEmbedder(grid=8)
>>> index = build_index(src, embedder, progress=False)
>>> radius = calibrate_plausibility(index, embedder, src, k=3, n_bootstrap=50, progress=False)
>>> radius.k, radius.refused_share <= radius.max_refused
(3, True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from monai_pso.calibrate.bootstrap import PatientResampler, bootstrap_statistic, percentile_interval
from monai_pso.calibrate.calibration import FEW_PATIENTS
from monai_pso.calibrate.radius import PlausibilityRadius
from monai_pso.data import DataSource, load_source, record_batches
from monai_pso.embed.base import Embedder
from monai_pso.embed.registry import resolve_embedder
from monai_pso.embed.views import QueryViews
from monai_pso.errors import ConfigurationError, DataSourceError, IndexIntegrityError
from monai_pso.index.backends import exact_arithmetic
from monai_pso.index.items import embedding_rows
from monai_pso.index.query import check_image_batch

#: Defaults: the k of the k-NN distance (as ``prdc``) and the largest share of held-out real images refused.
DEFAULT_K = 5
MAX_REFUSED = 0.05


def min_holdout_images(max_refused: float) -> int:
    """The fewest held-out images whose :func:`conformal_radius` refuses at most ``max_refused`` of new real images.

    Examples
    --------
    >>> min_holdout_images(0.05), min_holdout_images(0.01)
    (19, 99)
    """
    return math.ceil((1.0 - max_refused) / max_refused - 1e-9)


def conformal_radius(values: np.ndarray, max_refused: float) -> float:
    """The ``ceil((n + 1) * (1 - max_refused))``-th smallest of ``values`` (``inf`` when that rank exceeds ``n``).

    Examples
    --------
    >>> conformal_radius(np.arange(1.0, 41.0), 0.05), conformal_radius(np.arange(1.0, 11.0), 0.05)
    (39.0, inf)
    """
    rank = math.ceil((len(values) + 1) * (1.0 - max_refused) - 1e-9)
    return float(np.sort(values)[rank - 1]) if rank <= len(values) else math.inf


def kth_nearest_distances(index: Any, embedder: Embedder, images: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """Per image ``(B, 1, *spatial)`` in ``[0, 1]``: the exact distance to its ``k``-th nearest distinct training image.

    The distance to one training image is the smallest over the image's valid vectors and that training
    image's rows (as everywhere in monai-pso); the ``k`` nearest training images of the whole image are
    among the ``k`` nearest of some of its vectors, which the index returns exactly.

    Raises
    ------
    ImageValueError
        Bad images (:func:`~monai_pso.index.query.check_image_batch`).
    ConfigurationError
        ``k`` is not between 1 and the number of training images.

    Examples
    --------
    >>> from monai_pso.index import ReferenceIndex
    >>> from monai_pso.embed.pixel import PixelEmbedder
    >>> embedder = PixelEmbedder(grid=2)
    >>> training = np.stack([np.full((1, 4, 4), v, np.float32) for v in (0.0, 0.5, 1.0)])
    >>> index = ReferenceIndex.from_vectors(embedder.embed(training).rows(), [0, 1, 2], ["a", "b", "c"], ["p", "q", "r"], image_shape=(4, 4))
    >>> kth_nearest_distances(index, embedder, training[:1], k=1).tolist()
    [0.0]
    """
    if not 1 <= k <= index.n_items:
        raise ConfigurationError(f"k={k}: the index holds {index.n_items} training images; choose k between 1 and that")
    batch = check_image_batch(images, index)
    with torch.no_grad(), exact_arithmetic():
        embedding = QueryViews().embed(embedder, torch.from_numpy(batch))
    rows, owner = embedding_rows(embedding, index.dim)
    rows_per_item = int(np.bincount(index.item_of_rows(np.arange(index.n_rows))).max())
    distances, hits = index.nearest(rows, k=min(index.n_rows, k * rows_per_item))
    items = index.item_of_rows(hits.ravel()).reshape(hits.shape)
    out = np.empty(len(batch), np.float64)
    for image in range(len(batch)):
        mine = owner == image
        per_item = np.full(index.n_items, np.inf)
        np.minimum.at(per_item, items[mine].ravel(), distances[mine].ravel())
        out[image] = np.partition(per_item, k - 1)[k - 1]
    if not np.isfinite(out).all():
        raise IndexIntegrityError(f"reference index returned fewer than {k} distinct training images for some of {len(batch)} images")
    return out


def holdout_kth_distances(index: Any, embedder: Embedder, source: DataSource, k: int, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """:func:`kth_nearest_distances` of every image of ``source``, in order."""
    values = []
    with tqdm(total=len(source), desc="Plausibility distances", unit="img", disable=not progress) as bar:
        for chunk, images in record_batches(source.records, batch_size):
            values.append(kth_nearest_distances(index, embedder, images, k))
            bar.update(len(chunk))
    return np.concatenate(values)


def calibrate_plausibility(
    index: Any,
    embedder: Embedder | None,
    holdout: DataSource | str,
    split: str | None = "val",
    k: int = DEFAULT_K,
    max_refused: float = MAX_REFUSED,
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
    batch_size: int = 64,
    progress: bool = True,
) -> PlausibilityRadius:
    """Calibrate the plausibility radius of ``index`` on ``holdout``'s ``split`` (see the module docstring).

    Parameters
    ----------
    index
        The reference index of the training images in the fidelity embedding.
    embedder
        The embedder that built it; ``None`` rebuilds it from the settings the index records.
    holdout, split
        SOURCE string or data source of patients that are not in the index, and which split of it.
    k
        The k-NN distance's k (capped at the number of training images, with a note).
    max_refused
        The largest share of held-out real images the radius may refuse (in ``[0, 1)``).
    n_bootstrap, seed, confidence
        Patient bootstrap replicates, their seed and the intervals' level.
    batch_size, progress
        Images per embedding call; a progress bar.

    Raises
    ------
    DataSourceError
        The held-out split is empty or shares patients with the index, or the radius would be zero.
    ConfigurationError
        An option out of range.
    """
    if not 0.0 <= max_refused < 1.0 or k < 1 or n_bootstrap < 1 or not 0.0 < confidence < 1.0:
        raise ConfigurationError(f"max_refused={max_refused}, k={k}, n_bootstrap={n_bootstrap}, confidence={confidence}: need 0 <= max_refused < 1, k >= 1, n_bootstrap >= 1, 0 < confidence < 1")
    embedder = resolve_embedder(index, embedder)
    held = load_source(holdout).split(split)
    if len(held) < min_holdout_images(max_refused):
        raise DataSourceError(
            held.description, f"{len(held)} held-out images: the plausibility radius needs at least {min_holdout_images(max_refused)} to refuse at most {max_refused:.0%} of real images"
        )
    shared = sorted(set(held.patients()) & set(index.patient_ids))
    if shared:
        raise DataSourceError(held.description, f"{len(shared)} held-out patients are in the training index (e.g. {shared[0]}); calibrate on unseen patients")
    notes = []
    if k > index.n_items:
        notes.append(f"k={k} asked, but the index holds {index.n_items} training images: k={index.n_items}")
        k = index.n_items
    values = holdout_kth_distances(index, embedder, held, k, batch_size, progress)
    value = conformal_radius(values, max_refused)
    if not value > 0:
        raise DataSourceError(held.description, f"plausibility radius is {value:g}: the held-out images coincide with training images; check the splits")
    patients = np.array([r.patient_id for r in held.records], dtype=str)
    resampler, rng = PatientResampler(patients), np.random.default_rng(seed)
    radius_reps = bootstrap_statistic(values, resampler, lambda v: conformal_radius(v, max_refused), n_bootstrap, rng)
    share_reps = bootstrap_statistic(values, resampler, lambda v: np.mean(v > value), n_bootstrap, rng)
    n_patients = len(set(patients.tolist()))
    if n_patients < FEW_PATIENTS:
        notes.append(f"only {n_patients} held-out patients: the confidence intervals are wide")
    return PlausibilityRadius(
        value=value,
        k=k,
        max_refused=float(max_refused),
        rank=math.ceil((len(values) + 1) * (1.0 - max_refused) - 1e-9),
        interval=percentile_interval(radius_reps, confidence),
        refused_share=float(np.mean(values > value)),
        refused_share_interval=percentile_interval(share_reps, confidence),
        n_images=len(values),
        n_patients=n_patients,
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        seed=seed,
        embedder_fingerprint=embedder.fingerprint,
        embedder_name=embedder.name,
        index_fingerprint=index.fingerprint,
        sources={"training": index.source, "holdout": held.description},
        notes=tuple(notes),
    )
