"""Calibrating tau from data: how close is too close to a training image?

Two candidate thresholds are measured with the guard's own embedder and distance:

- ``tau_holdout``: a low percentile (``holdout_percentile``, default 5) of the distances from images of
  held-out patients (never in the index) to their nearest training image. Real images of people
  the model never saw lie this far from the training set; a synthetic image closer than nearly all of
  them is suspicious.
- ``tau_same``: a high percentile (``same_percentile``, default 95) of the distances between an image
  and the nearest other image of the same patient (:func:`~monai_pso.calibrate.distances.same_patient_distances`),
  over every patient with two or more images in the holdout split *and* in the training split of the
  index's source (both when available). A synthetic image closer to a training image than most
  re-acquisitions of one person are to each other may show that person.

``rule="max"`` (default) takes the stricter (larger) of the two; ``"holdout"`` or ``"same"`` take one.
When no patient has two images (MedMNIST has one image per patient) ``tau_same`` is absent and ``max``
falls back to ``holdout``, with a note in the threshold.

Near-duplicates across splits: real collections hold several crops or re-exports of one lesion under
different ids. Left in, they pull a low percentile towards zero and the guard would pass near-copies.
Measured with the default whole-image check: in BreastMNIST 40% of the validation images lie within
0.32 x the median held-out distance of a training image (8.5% within 0.1 x), then nothing until 0.67 x;
the 5th percentile is 0.005 with them and 0.060 without. Nearest-neighbour distances of genuinely new
images concentrate around their median (PneumoniaMNIST subset: apart from 3 exact duplicates, the
closest validation image is at 0.54 x the median). So by default (``near_duplicate_factor=0.5``) held-out
images closer than half the median held-out distance are counted (``near_duplicate_share``), reported
in the notes and left out of the holdout percentile; the percentile with them is kept as
``holdout_value_all``. Leaving them out only raises tau (stricter); the utility cost is still measured
on all held-out images (near-duplicates count as rejected, as they should).

Confidence intervals: percentile bootstrap (``n_bootstrap`` replicates, ``seed``) resampling *patients*
with replacement, for each part and for tau itself. The utility cost is the share of all held-out real
images that tau would reject.

Examples
--------
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> from monai_pso.index import build_index
>>> src = "phantom:2d?patients=12&acquisitions=3&size=32"
>>> embedder = PixelEmbedder()
>>> index = build_index(src, embedder, progress=False)
>>> t = calibrate_threshold(index, embedder, src, split="val", n_bootstrap=50, progress=False)
>>> t.value >= t.holdout.value, t.same is not None, 0.0 <= t.utility_cost <= 1.0
(True, True, True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from monai_pso.calibrate.bootstrap import PatientResampler, bootstrap_percentile, percentile_interval
from monai_pso.calibrate.distances import PatientDistances, holdout_distances, same_patient_distances
from monai_pso.calibrate.threshold import RULES, Threshold, ThresholdPart
from monai_pso.data import DataSource, load_source
from monai_pso.embed.base import Embedder
from monai_pso.embed.registry import resolve_embedder
from monai_pso.embed.views import QueryViews, default_query_views
from monai_pso.errors import ConfigurationError, DataSourceError, MonaiPsoError

#: Below this many held-out patients the notes warn that the interval is wide.
FEW_PATIENTS = 20


def _training_source(index, training: DataSource | str | None, training_split: str, notes: list[str]) -> DataSource | None:
    """The index's training images, when they can be read and match the index item for item."""
    description = index.source if training is None else getattr(training, "description", str(training))
    try:
        source = load_source(training if training is not None else re.sub(r"\s*\[split=[^\]]*\]$", "", index.source))
    except MonaiPsoError as error:
        notes.append(f"training source {description!r} not readable ({error}); same-patient distances from the holdout only")
        return None
    chosen = source.split(training_split)
    if [r.item_id for r in chosen] != list(index.item_ids):
        notes.append(f"training source {description!r} does not match the index item for item; same-patient distances from the holdout only")
        return None
    return chosen


def _part(name: str, data: PatientDistances, percentile: float, replicates: np.ndarray, confidence: float) -> ThresholdPart:
    return ThresholdPart(
        name=name,
        value=float(np.percentile(data.values, percentile)),
        percentile=float(percentile),
        interval=percentile_interval(replicates, confidence),
        n_images=len(data),
        n_patients=data.n_patients,
        sources=data.sources,
    )


def _check_options(rule: str, holdout_percentile: float, same_percentile: float, n_bootstrap: int, near_duplicate_factor: float | None, confidence: float) -> None:
    if rule not in RULES:
        raise ConfigurationError(f"rule={rule!r}: choose one of {', '.join(RULES)}")
    for name, value in (("holdout_percentile", holdout_percentile), ("same_percentile", same_percentile)):
        if not 0.0 <= value <= 100.0:
            raise ConfigurationError(f"{name}={value}: must lie in [0, 100]")
    if n_bootstrap < 1 or not 0.0 < confidence < 1.0:
        raise ConfigurationError(f"n_bootstrap={n_bootstrap}, confidence={confidence}: need n_bootstrap >= 1 and 0 < confidence < 1")
    if near_duplicate_factor is not None and not 0.0 <= near_duplicate_factor < 1.0:
        raise ConfigurationError(f"near_duplicate_factor={near_duplicate_factor}: must lie in [0, 1) or be None")


def calibrate_threshold(
    index,
    embedder: Embedder | None,
    holdout: DataSource | str,
    split: str | Sequence[str] | None = "val",
    holdout_percentile: float = 5.0,
    same_percentile: float = 95.0,
    rule: str = "max",
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    training: DataSource | str | None = None,
    training_split: str = "train",
    near_duplicate_factor: float | None = 0.5,
    views: QueryViews | None = None,
    confidence: float = 0.95,
    batch_size: int = 64,
    progress: bool = True,
) -> Threshold:
    """Calibrate tau for ``index`` from held-out patients (and same-patient pairs); see the module docstring.

    Parameters
    ----------
    index
        The reference index of the training images (:class:`~monai_pso.index.ReferenceIndex`).
    embedder
        The embedder that built it; ``None`` rebuilds it from the settings the index records.
    holdout
        SOURCE string or data source holding patients that are not in the index.
    split
        Which split(s) of ``holdout`` to use (``None``: all). Keep ``test`` out to evaluate the guard later.
    holdout_percentile, same_percentile
        The percentiles taken (0..100).
    rule
        ``max`` (stricter of the two), ``holdout`` or ``same``.
    n_bootstrap, seed, confidence
        Patient bootstrap replicates, their seed and the interval level.
    training, training_split
        The training images for same-patient pairs; default: the source the index records.
    near_duplicate_factor
        Held-out images closer than this times the median held-out distance are near-duplicates of
        training images and are left out of the holdout percentile (``None`` keeps them).
    views
        Extra query-side views (translations, turns) every distance is measured with; ``None``:
        :func:`~monai_pso.embed.views.default_query_views`. Recorded in the threshold.
    batch_size, progress
        Images per embedding call; progress bars.

    Raises
    ------
    DataSourceError
        The holdout split is empty, shares patients with the index, or ``rule="same"`` without pairs,
        or tau would be zero.
    FingerprintMismatchError
        ``embedder`` did not build ``index``.
    """
    _check_options(rule, holdout_percentile, same_percentile, n_bootstrap, near_duplicate_factor, confidence)
    embedder = resolve_embedder(index, embedder)
    held = load_source(holdout).split(split)
    if len(held) == 0:
        raise DataSourceError(held.description, "no held-out images in this split")
    shared = sorted(set(held.patients()) & set(index.patient_ids))
    if shared:
        raise DataSourceError(held.description, f"{len(shared)} held-out patients are in the training index (e.g. {shared[0]}); calibrate on unseen patients")
    notes: list[str] = []
    views = views if views is not None else default_query_views(embedder, len(index.image_shape or (0, 0)))

    distances = holdout_distances(index, embedder, held, views, batch_size, progress)
    near = np.zeros(len(distances), bool)
    if near_duplicate_factor is not None:
        near = distances.values < near_duplicate_factor * np.median(distances.values)
    kept = distances.subset(~near) if (~near).any() else distances
    if near.any():
        notes.append(
            f"{near.mean():.1%} of held-out images ({int(near.sum())}) lie within {near_duplicate_factor:g} x the median held-out "
            "distance of a training image (near-duplicates across splits); they are left out of the holdout percentile"
        )

    training_images = _training_source(index, training, training_split, notes)
    same_sources = [held] + ([training_images] if training_images is not None else [])
    same = PatientDistances.concat([same_patient_distances(embedder, s, views, index, progress) for s in same_sources])

    rng = np.random.default_rng(seed)
    holdout_reps = bootstrap_percentile(kept.values, PatientResampler(kept.patients), holdout_percentile, n_bootstrap, rng)
    holdout_part = _part("holdout", kept, holdout_percentile, holdout_reps, confidence)
    same_part, same_reps = None, None
    if len(same):
        same_reps = bootstrap_percentile(same.values, PatientResampler(same.patients), same_percentile, n_bootstrap, rng)
        same_part = _part("same", same, same_percentile, same_reps, confidence)
    elif rule == "same":
        raise DataSourceError(held.description, "rule='same' needs patients with two or more images; none found (use rule='holdout')")
    else:
        notes.append("no patient has two or more images (e.g. MedMNIST): tau_same is absent and the rule falls back to holdout")

    applied = rule if (rule != "max" or same_part is not None) else "holdout"
    if applied == "holdout":
        value, tau_reps = holdout_part.value, holdout_reps
    elif applied == "same":
        value, tau_reps = same_part.value, same_reps
    else:
        value, tau_reps = max(holdout_part.value, same_part.value), np.maximum(holdout_reps, same_reps)
    if not value > 0:
        raise DataSourceError(held.description, f"calibrated tau is {value:g}: the held-out images coincide with training images; check the splits")
    if holdout_part.n_patients < FEW_PATIENTS:
        notes.append(f"only {holdout_part.n_patients} held-out patients: the confidence intervals are wide")

    return Threshold(
        value=float(value),
        rule=rule,
        applied_rule=applied,
        holdout=holdout_part,
        same=same_part,
        interval=percentile_interval(tau_reps, confidence),
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        seed=seed,
        utility_cost=float(np.mean(distances.values < value)),
        near_duplicate_share=float(near.mean()),
        near_duplicate_factor=near_duplicate_factor,
        holdout_value_all=float(np.percentile(distances.values, holdout_percentile)),
        embedder_fingerprint=embedder.fingerprint,
        embedder_name=embedder.name,
        index_fingerprint=index.fingerprint,
        index_manifest_sha256=(getattr(index, "manifest", None) or {}).get("manifest_sha256"),
        query_views=views.to_dict(),
        sources={
            "training": index.source,
            "holdout": held.description,
            "same_patient": "; ".join(same.sources) if len(same) else "",
        },
        notes=tuple(notes),
    )
