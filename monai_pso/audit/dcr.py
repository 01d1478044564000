"""DCR holdout test: are released images closer to the training set than new images of new patients are?

Every released image ``s`` gets ``d_T(s)``, its distance to the closest record (DCR) of the **full**
training set. Every holdout image ``h`` (patients the generator never saw, one image per patient) gets
``d_T(h)``, its own distance to the same full training set: the reference distribution of "a new image
from the population". Both are searched against the same set in the same embedding, so the size of the
training set affects both alike, whatever the ratio of training to holdout size. A copy of *any*
training image sits at (or near) distance 0, far below the holdout's distances.

Test: one-sided Mann-Whitney U (``scipy.stats.mannwhitneyu``, ``alternative="less"``): the released
distances are stochastically smaller than the holdout's. Null hypothesis: the released images are
independent of the training images and distributed like new real images, so that their DCRs and the
holdout's are exchangeable. Effect sizes: the AUC ``P(d_T(s) < d_T(h)) + P(=)/2`` (0.5 without
leakage, 1 when every released image is closer than every holdout image), with a stratified percentile
bootstrap interval, and the **close share**: the share of released images closer to the training set
than the holdout's ``q``-th percentile distance, with a Clopper-Pearson (exact binomial) interval.
Without leakage the close share is about ``q``.

The null also assumes that the release is distributed like real images. A generator whose images are,
say, smoother than real ones has other DCRs without copying anything. :func:`population_shift` checks
that part of the assumption on patients neither side saw (the control group): released and holdout
images' distances to the control images must agree as well (two-sided Mann-Whitney). The audit warns
when they do not. See ``docs/audit.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from math import floor

import numpy as np
from scipy.stats import binomtest, mannwhitneyu

from monai_pso.audit.distances import EmbeddedImages, Nearest, nearest
from monai_pso.audit.intervals import percentile_interval, stratified_bootstrap, z_value
from monai_pso.audit.membership import rank_auc

#: Default ``q``: the close share counts released images closer than the holdout's 5th-percentile DCR.
DEFAULT_QUANTILE = 0.05


@dataclass(frozen=True)
class Proportion:
    """A binomial proportion with its Clopper-Pearson (exact) interval.

    Examples
    --------
    >>> p = Proportion(0, 100)
    >>> p.value, round(p.ci[1], 4)
    (0.0, 0.0362)
    """

    successes: int
    trials: int
    confidence: float = 0.95

    def __post_init__(self) -> None:
        z_value(self.confidence)  # validates the level
        if self.trials <= 0 or not 0 <= self.successes <= self.trials:
            raise ValueError(f"a proportion needs 0 <= successes ({self.successes}) <= trials ({self.trials}), trials > 0")

    @property
    def value(self) -> float:
        return self.successes / self.trials

    @property
    def ci(self) -> tuple[float, float]:
        """Clopper-Pearson interval (``binomtest(...).proportion_ci(method="exact")``)."""
        interval = binomtest(int(self.successes), int(self.trials)).proportion_ci(confidence_level=self.confidence, method="exact")
        return float(interval.low), float(interval.high)

    def to_dict(self) -> dict:
        return {"value": self.value, "ci": list(self.ci), "successes": self.successes, "trials": self.trials}


@dataclass(frozen=True)
class ShiftCheck:
    """Do released and holdout images lie as far from unseen (control) patients? See :func:`population_shift`."""

    auc: float  #: P(released image nearer the control set than a holdout image) + ties/2; 0.5 = no shift
    p_value: float  #: two-sided Mann-Whitney U
    control_images: int

    def to_dict(self) -> dict:
        return {"auc": self.auc, "p_value": self.p_value, "control_images": self.control_images}


@dataclass(frozen=True)
class DcrResult:
    """Outcome of :func:`dcr_holdout_test`.

    Attributes
    ----------
    auc, auc_ci
        ``P(d_T(released) < d_T(holdout))``, ties half, over all (released, holdout) pairs, and its
        percentile bootstrap interval (released and holdout images resampled separately).
    p_value
        One-sided Mann-Whitney U p-value of "released DCRs are stochastically smaller".
    close
        Released images with ``d_T < threshold`` (Clopper-Pearson interval).
    quantile, threshold, null_share
        ``q``; the holdout's ``q``-th percentile DCR (its ``k``-th smallest, ``k = max(1, floor(q (n + 1)))``);
        ``k / (n + 1)``, the close share expected without leakage (continuous distances).
    released_images, holdout_images
        Sample sizes.
    released_at_zero, holdout_at_zero
        Images at distance exactly 0 from a training image (an exact copy in this embedding). A holdout
        image at 0 means the holdout shares images with training (duplicates in the source collection).
    shift
        :func:`population_shift` on the control patients, when computed.
    """

    auc: float
    auc_ci: tuple[float, float]
    p_value: float
    close: Proportion
    quantile: float
    threshold: float
    null_share: float
    released_images: int
    holdout_images: int
    released_at_zero: int
    holdout_at_zero: int
    shift: ShiftCheck | None = None

    def to_dict(self) -> dict:
        return {
            "test": "one-sided Mann-Whitney U: released images' distances to the full training set vs holdout images' distances to it",
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "p_value": self.p_value,
            "close_share": self.close.value,
            "close_share_ci": list(self.close.ci),
            "close_released": self.close.successes,
            "quantile": self.quantile,
            "threshold": self.threshold,
            "null_share": self.null_share,
            "released_images": self.released_images,
            "holdout_images": self.holdout_images,
            "released_at_zero": self.released_at_zero,
            "holdout_at_zero": self.holdout_at_zero,
            "shift": None if self.shift is None else self.shift.to_dict(),
        }


def _closer_auc(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``P(first < second) + P(=)/2`` along the last axis (vectorised over bootstrap rows)."""
    return rank_auc(-first, -second)


def dcr_holdout_test(
    released: np.ndarray,
    holdout: np.ndarray,
    confidence: float = 0.95,
    quantile: float = DEFAULT_QUANTILE,
    n_resamples: int = 1000,
    seed: int = 0,
) -> DcrResult:
    """Compare released images' distances to the full training set with holdout images' distances to it.

    Parameters
    ----------
    released
        Per released image, the distance to its nearest training image (all of training).
    holdout
        Per holdout image (patients disjoint from training; one image per patient, see
        :func:`one_per_patient`), the distance to its nearest training image, in the same embedding.
    confidence
        Level of both intervals.
    quantile
        ``q`` of the close share.
    n_resamples, seed
        Bootstrap of the AUC interval.

    Examples
    --------
    >>> result = dcr_holdout_test(np.zeros(20), np.linspace(0.1, 1.0, 20), n_resamples=200)
    >>> result.auc, result.close.value, result.p_value < 1e-6
    (1.0, 1.0, True)
    """
    released, holdout = np.asarray(released, np.float64).ravel(), np.asarray(holdout, np.float64).ravel()
    if len(released) == 0 or len(holdout) == 0:
        raise ValueError("the DCR test needs at least one released and one holdout image")
    if not np.isfinite(released).all() or not np.isfinite(holdout).all():
        raise ValueError("the DCR test needs finite distances")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile!r}: must lie strictly between 0 and 1")
    p_value = float(mannwhitneyu(released, holdout, alternative="less", method="auto").pvalue)
    auc = float(_closer_auc(released, holdout))
    replicates = stratified_bootstrap((released, holdout), _closer_auc, n_resamples, seed)
    rank = min(max(1, floor(quantile * (len(holdout) + 1))), len(holdout))
    threshold = float(np.sort(holdout)[rank - 1])
    close = Proportion(int((released < threshold).sum()), len(released), confidence)
    return DcrResult(
        auc=auc,
        auc_ci=percentile_interval(replicates, confidence),
        p_value=p_value,
        close=close,
        quantile=quantile,
        threshold=threshold,
        null_share=rank / (len(holdout) + 1),
        released_images=len(released),
        holdout_images=len(holdout),
        released_at_zero=int((released == 0.0).sum()),
        holdout_at_zero=int((holdout == 0.0).sum()),
    )


def population_shift(released_to_control: np.ndarray, holdout_to_control: np.ndarray, control_images: int) -> ShiftCheck:
    """Whether released and holdout images lie as far from patients that neither saw (the control group).

    Without a shift both are new images from the same population as far as the control patients can
    tell, whatever the release copied from training; a small p-value says the release is not distributed
    like real images in this embedding, so the DCR test's reference (the holdout) does not describe it.

    Examples
    --------
    >>> check = population_shift(np.array([0.1, 0.2, 0.3]), np.array([0.15, 0.25, 0.35]), control_images=40)
    >>> check.auc, check.p_value > 0.05
    (0.6666666666666666, True)
    """
    released, holdout = np.asarray(released_to_control, np.float64), np.asarray(holdout_to_control, np.float64)
    p_value = float(mannwhitneyu(released, holdout, alternative="two-sided", method="auto").pvalue)
    return ShiftCheck(float(_closer_auc(released, holdout)), p_value, int(control_images))


def one_per_patient(patient_ids: Sequence[str] | np.ndarray, seed: int) -> np.ndarray:
    """Positions of one image per patient, drawn at random (seeded), in order of position.

    Images of one patient are not independent (their DCRs are alike); one per patient makes the holdout's
    DCRs independent draws, as the Mann-Whitney test assumes.

    Examples
    --------
    >>> one_per_patient(["a", "a", "b", "c", "c"], seed=0).tolist() in ([0, 2, 3], [0, 2, 4], [1, 2, 3], [1, 2, 4])
    True
    """
    ids = np.asarray(patient_ids, dtype=object)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for position, patient in enumerate(ids.tolist()):
        groups.setdefault(patient, []).append(position)
    return np.sort(np.array([members[int(rng.integers(len(members)))] for members in groups.values()], dtype=np.int64))


@dataclass(frozen=True)
class DcrDistances:
    """The distances behind a DCR test, in the audit embedding.

    Attributes
    ----------
    released
        Per released image, its nearest image of the full training set (distance and position).
    holdout
        Per holdout image (every one), its distance to the nearest training image.
    reference
        Positions of the holdout images the test compares with (one per patient, :func:`one_per_patient`).
    """

    released: Nearest
    holdout: np.ndarray
    reference: np.ndarray

    @property
    def reference_distances(self) -> np.ndarray:
        return self.holdout[self.reference]


def dcr_test(
    release: EmbeddedImages,
    training: EmbeddedImages,
    holdout: EmbeddedImages,
    control: EmbeddedImages | None = None,
    *,
    confidence: float = 0.95,
    quantile: float = DEFAULT_QUANTILE,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[DcrResult, DcrDistances]:
    """The DCR test on embedded cohorts: exact nearest training image of every released and holdout image.

    ``holdout`` (and ``control``, for :func:`population_shift`) must hold patients disjoint from
    ``training``; all sets must be embedded with the same embedder. Distances are brute force in float64
    (:func:`monai_pso.audit.distances.nearest`), so the nearest training image is exact.

    Examples
    --------
    >>> result, distances = dcr_test(release, training, holdout, control, seed=0)  # doctest: +SKIP
    >>> result.p_value < 0.05  # doctest: +SKIP
    """
    released = nearest(release, training)
    holdout_to_training = nearest(holdout, training).distance
    reference = one_per_patient(holdout.patient_ids, seed)
    result = dcr_holdout_test(released.distance, holdout_to_training[reference], confidence, quantile, n_resamples, seed)
    if control is not None:
        shift = population_shift(nearest(release, control).distance, nearest(holdout.subset(reference), control).distance, len(control))
        result = replace(result, shift=shift)
    return result, DcrDistances(released, holdout_to_training, reference)
