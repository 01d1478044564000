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

Is tau_same meaningful in this embedding? It says "closer than a re-acquisition of one person", which
protects anyone only when a re-acquisition lies nearer its own patient than the nearest *stranger*
the guard would find in the training set. Measured as the guard uses it (:class:`~monai_pso.calibrate.threshold.VerificationAUC`):
for every image of a held-out patient with two or more images, its distance to that patient's nearest
other image against its distance to the nearest training image (a stranger: held-out patients are not
in the index), as a Mann-Whitney AUC with a patient-bootstrap interval. tau_same is applied (``max`` or
``same``) only when ``AUC >= min_same_auc`` (0.7), the interval's lower end is above 0.5 (better than
chance at the interval's level) and at least ``min_same_patients`` (10) held-out patients have repeat
images (a bootstrap over fewer patients is not an interval). Otherwise ``max`` takes tau from the
holdout part alone (``applied_rule="holdout"``, the reason in the notes) and ``same`` is refused.
``min_same_auc=None`` applies tau_same whatever its AUC. On real paediatric chest X-rays (several
images per child, pixel checks) the AUC is 0.1-0.2: a child's other images lie *farther* than a
stranger's nearest image, and tau_same would refuse nearly every unseen image.

Utility cost: the share of all held-out real images tau refuses. Above ``max_utility_cost`` (0.5) it
is an error (:class:`UtilityCostError`, saying which part set tau and how to proceed) unless
``accept_utility_cost=True``; the limit and the acceptance are recorded in the threshold.

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
>>> t.verification.n_patients < 10, t.same_applied  # too few held-out patients with repeats to show tau_same means anything
(True, False)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from monai_pso.calibrate.bootstrap import PatientResampler, auc_smaller, bootstrap_auc, bootstrap_percentile, percentile_interval
from monai_pso.calibrate.distances import PatientDistances, holdout_distances, same_patient_distances
from monai_pso.calibrate.threshold import RULES, Threshold, ThresholdPart, VerificationAUC
from monai_pso.data import DataSource, load_source
from monai_pso.embed.base import Embedder
from monai_pso.embed.registry import resolve_embedder
from monai_pso.embed.views import QueryViews, default_query_views
from monai_pso.errors import ConfigurationError, DataSourceError, MonaiPsoError

#: Below this many held-out patients the notes warn that the interval is wide.
FEW_PATIENTS = 20

#: Defaults of the criterion for tau_same (see the module docstring) and of the utility-cost limit.
MIN_SAME_AUC = 0.7
MIN_SAME_PATIENTS = 10
MAX_UTILITY_COST = 0.5


class UtilityCostError(MonaiPsoError):
    """The calibrated tau would refuse more held-out real images than the limit allows (``accept_utility_cost`` accepts it)."""


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


def verification_auc(
    same: PatientDistances,
    holdout: PatientDistances,
    n_bootstrap: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
    min_auc: float | None = MIN_SAME_AUC,
    min_patients: int = MIN_SAME_PATIENTS,
) -> VerificationAUC | None:
    """Same- vs different-patient AUC of held-out patients with repeat images, and whether tau_same means anything.

    Parameters
    ----------
    same
        Per image of a held-out patient with two or more images, the distance to that patient's nearest
        other image (:func:`~monai_pso.calibrate.distances.same_patient_distances`).
    holdout
        Per held-out image, the distance to the nearest training image (:func:`~monai_pso.calibrate.distances.holdout_distances`):
        always another patient, as held-out patients are not in the index. Images of patients absent
        from ``same`` are left out, so both kinds come from the same images.
    n_bootstrap, rng, confidence
        The patient bootstrap of the interval.
    min_auc, min_patients
        The criterion (see the module docstring); ``min_auc=None``: none.

    Returns
    -------
    VerificationAUC or None
        ``None`` when no held-out patient has two or more images.

    Examples
    --------
    >>> same = PatientDistances(np.array([0.1, 0.2, 0.1, 0.3]), np.array(["a", "a", "b", "b"]))
    >>> held = PatientDistances(np.array([0.5, 0.6, 0.4, 0.7, 0.9]), np.array(["a", "a", "b", "b", "c"]))
    >>> v = verification_auc(same, held, 100, np.random.default_rng(0), min_patients=2)
    >>> v.value, v.n_images, v.n_patients, v.meaningful
    (1.0, 4, 2, True)
    """
    if not len(same):
        return None
    different = holdout.subset(np.isin(holdout.patients, np.unique(same.patients)))
    values = np.concatenate([same.values, different.values])
    first = np.concatenate([np.ones(len(same), bool), np.zeros(len(different), bool)])
    value = auc_smaller(same.values, different.values)
    replicates = bootstrap_auc(values, first, PatientResampler(np.concatenate([same.patients, different.patients])), n_bootstrap, rng)
    interval = percentile_interval(replicates, confidence)
    n_patients = same.n_patients
    if min_auc is None:
        meaningful, reason = True, "no criterion asked (min_same_auc=None): tau_same counts whatever its AUC"
    elif n_patients < min_patients:
        meaningful = False
        reason = f"only {n_patients} held-out patients with two or more images (criterion: >= {min_patients}), too few for the AUC's interval"
    elif value < min_auc or interval[0] <= 0.5:
        meaningful = False
        reason = (
            f"same-patient images are not reliably nearer each other than the nearest stranger in the training set "
            f"(AUC {value:.3f}, interval lower end {interval[0]:.3f}; criterion: AUC >= {min_auc:g} and lower end > 0.5)"
        )
    else:
        meaningful = True
        reason = f"AUC {value:.3f} >= {min_auc:g} and interval lower end {interval[0]:.3f} > 0.5 over {n_patients} patients"
    return VerificationAUC(float(value), interval, len(same), n_patients, min_auc, min_patients, meaningful, reason)


def _utility_message(description: str, value: float, cost: float, limit: float, holdout: ThresholdPart, same: ThresholdPart | None, applied: str, near_share: float) -> str:
    if applied != "holdout" and same is not None and same.value > holdout.value:
        why = (
            f"tau_same ({same.value:.4g}, the {same.percentile:g}th percentile of same-patient distances) lies above most held-out "
            f"images' distance to the training set (holdout part {holdout.value:.4g})"
        )
        remedy = "use rule='holdout' (--rule holdout) or a lower same_percentile"
    elif near_share > 0:
        why = f"{near_share:.0%} of held-out images are near-duplicates of training images"
        remedy = "check that the holdout's patients and images are not in the training set"
    else:
        why = f"the held-out images lie close to the training set in this embedding (tau from the {applied} part)"
        remedy = "check the splits and the embedder"
    return (
        f"{description}: tau={value:.4g} would refuse {cost:.1%} of held-out real images (limit {limit:.0%}): {why}; "
        f"{remedy}, or accept this cost with accept_utility_cost=True (--accept-utility-cost)"
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
    same_from_training: bool = True,
    near_duplicate_factor: float | None = 0.5,
    views: QueryViews | None = None,
    confidence: float = 0.95,
    min_same_auc: float | None = MIN_SAME_AUC,
    min_same_patients: int = MIN_SAME_PATIENTS,
    max_utility_cost: float = MAX_UTILITY_COST,
    accept_utility_cost: bool = False,
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
    same_from_training
        ``False``: same-patient distances from the holdout only (for an embedder trained on the training
        split's pairs, whose own pairs lie closer than new ones).
    near_duplicate_factor
        Held-out images closer than this times the median held-out distance are near-duplicates of
        training images and are left out of the holdout percentile (``None`` keeps them).
    views
        Extra query-side views (translations, turns) every distance is measured with; ``None``:
        :func:`~monai_pso.embed.views.default_query_views`. Recorded in the threshold.
    min_same_auc, min_same_patients
        tau_same counts only when the same- vs different-patient AUC of the held-out patients with
        repeat images is at least ``min_same_auc``, its interval's lower end above 0.5, and there are at
        least ``min_same_patients`` such patients; ``min_same_auc=None`` applies it whatever its AUC.
    max_utility_cost, accept_utility_cost
        A tau refusing more than this share of the held-out real images is an error unless accepted.
    batch_size, progress
        Images per embedding call; progress bars.

    Raises
    ------
    DataSourceError
        The holdout split is empty, shares patients with the index, or ``rule="same"`` without pairs
        or with a tau_same that is not meaningful, or tau would be zero.
    UtilityCostError
        tau would refuse more than ``max_utility_cost`` of the held-out real images (``accept_utility_cost`` accepts it).
    FingerprintMismatchError
        ``embedder`` did not build ``index``.
    """
    _check_options(rule, holdout_percentile, same_percentile, n_bootstrap, near_duplicate_factor, confidence)
    if not 0.0 <= max_utility_cost <= 1.0 or (min_same_auc is not None and not 0.0 <= min_same_auc <= 1.0) or min_same_patients < 1:
        raise ConfigurationError(
            f"max_utility_cost={max_utility_cost}, min_same_auc={min_same_auc}, min_same_patients={min_same_patients}: "
            "need shares in [0, 1] and at least one patient"
        )
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

    training_images = _training_source(index, training, training_split, notes) if same_from_training else None
    held_same = same_patient_distances(embedder, held, views, index, progress)
    training_same = [same_patient_distances(embedder, training_images, views, index, progress)] if training_images is not None else []
    same = PatientDistances.concat([held_same, *training_same])

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

    verification = verification_auc(held_same, distances, n_bootstrap, rng, confidence, min_same_auc, min_same_patients)
    same_counts = same_part is not None and (min_same_auc is None or (verification is not None and verification.meaningful))
    if same_part is not None and not same_counts:
        if verification is None:
            reason = "no held-out patient has two or more images, so whether same-patient distances are smaller than a stranger's cannot be measured"
        else:
            reason = verification.reason
        if rule == "same":
            raise DataSourceError(
                held.description, f"rule='same': tau_same is not shown to mean anything here ({reason}); use rule='max' or 'holdout', or min_same_auc=None to apply it anyway"
            )
        if rule == "max":
            notes.append(f"tau_same ({same_part.value:.4g}) not applied: {reason}; tau is the holdout part alone (min_same_auc=None applies it anyway)")
    applied = rule if (rule != "max" or same_counts) else "holdout"
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
    utility_cost = float(np.mean(distances.values < value))
    above_limit = utility_cost > max_utility_cost
    if above_limit and not accept_utility_cost:
        raise UtilityCostError(_utility_message(held.description, value, utility_cost, max_utility_cost, holdout_part, same_part, applied, float(near.mean())))
    if above_limit:
        notes.append(f"utility cost {utility_cost:.1%} is above the limit {max_utility_cost:.0%} and was accepted explicitly (accept_utility_cost)")

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
        utility_cost=utility_cost,
        near_duplicate_share=float(near.mean()),
        near_duplicate_factor=near_duplicate_factor,
        holdout_value_all=float(np.percentile(distances.values, holdout_percentile)),
        verification=verification,
        same_applied=applied != "holdout",
        utility_limit=float(max_utility_cost),
        utility_cost_accepted=bool(above_limit),
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
