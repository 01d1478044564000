"""Image singling-out: do balls that isolate one released image isolate one real patient?

This carries Anonymeter's singling-out attack (Giomi et al., PoPETs 2023) from table rows to images.
The attacker's predicates come from the release alone: for each released image ``s`` the predicate is
the open ball ``{x : d(x, s) < r_s}`` in the audit embedding, with

    r_s = min(n_s, q),   n_s = distance from s to the nearest released image not identical to s,
                         q   = the ``quantile`` (default 0.05) of all n_s.

So every ball holds no released image but ``s`` (and exact duplicates of it): it singles ``s`` out of
the release, as Anonymeter's queries single out one synthetic row. Capping the radius at a small
quantile of the release's own nearest-neighbour distances keeps the balls small where the release is
sparse: a ball as wide as the gap to the next released image would, in a sparse release, catch some
real patient by chance as often around a copy as anywhere else, and hide the copy.

The predicate succeeds on a set of real images when the ball holds images of exactly one patient
(one or several images of that patient). The attack is run against a subsample of the training
patients and, with the same predicates, against control patients never used in training, with equal
numbers of patients on both sides (Anonymeter corrects for unequal sizes with a fitted model; we
subsample instead). The risk is Anonymeter's ``(attack - control) / (1 - control)`` on the Wilson
rates, with its propagated interval (:class:`monai_pso.audit.intervals.Risk`): 0 means the release
singles out training patients no more often than patients it never saw.

When the guard has an identity check (``GUARD_DIR/identity/``), the audit runs the same attack in its
re-identification embedding too (``identity_singling_out`` in ``report.json``): a ball there that holds
exactly one training patient is a released image the identity network links to that one person, even
when it is no copy of any of their images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monai_pso.audit.cohorts import size_matched
from monai_pso.audit.distances import EmbeddedImages, distance_matrix
from monai_pso.audit.intervals import Rate, Risk
from monai_pso.errors import DataSourceError

#: Default cap of the ball radius, as a quantile of the release's nearest-neighbour distances.
DEFAULT_QUANTILE = 0.05


def ball_radii(release: EmbeddedImages, quantile: float = DEFAULT_QUANTILE) -> np.ndarray:
    """Per released image, the radius of its ball: ``min(n_s, q)`` (see the module docstring).

    Examples
    --------
    >>> from monai_pso.data import ImageRecord
    >>> from monai_pso.embed.base import Embedding
    >>> recs = [ImageRecord(f"s{k}", "synthetic", np.zeros((1, 2, 2), np.float32)) for k in range(4)]
    >>> e = Embedding.single(np.array([[0.0], [1.0], [5.0], [5.0]], np.float32))
    >>> ball_radii(EmbeddedImages(recs, e, e), quantile=1.0).tolist()  # duplicates 5, 5 count as one
    [1.0, 1.0, 4.0, 4.0]
    >>> ball_radii(EmbeddedImages(recs, e, e), quantile=0.0).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    if len(release) < 2:
        raise DataSourceError("release", "singling out needs at least two released images (a ball must exclude the others)")
    matrix = distance_matrix(release.query, release.reference)
    matrix[matrix == 0.0] = np.inf  # the image itself and its exact duplicates
    gaps = matrix.min(axis=1)
    finite = gaps[np.isfinite(gaps)]
    if finite.size == 0:
        raise DataSourceError("release", "every released image is identical: no ball can single one out")
    return np.minimum(gaps, float(np.quantile(finite, quantile)))


def singled_out(release: EmbeddedImages, radii: np.ndarray, target: EmbeddedImages) -> list[str | None]:
    """For each released image, the one target patient its ball isolates, or ``None``.

    Examples
    --------
    >>> from monai_pso.data import ImageRecord
    >>> from monai_pso.embed.base import Embedding
    >>> rec = lambda i, p: ImageRecord(i, p, np.zeros((1, 2, 2), np.float32))
    >>> one = lambda v: Embedding.single(np.array(v, np.float32)[:, None])
    >>> release = EmbeddedImages([rec("s0", "s"), rec("s1", "s")], one([0.0, 9.0]), one([0.0, 9.0]))
    >>> target = EmbeddedImages([rec("a", "p1"), rec("b", "p1"), rec("c", "p2")], one([0.1, 0.2, 8.0]), one([0.1, 0.2, 8.0]))
    >>> singled_out(release, np.array([1.0, 0.5]), target)
    ['p1', None]
    """
    patients = target.patient_ids
    codes = np.unique(patients, return_inverse=True)[1].astype(np.int64)
    inside = distance_matrix(release.query, target.reference) < np.asarray(radii, np.float64)[:, None]
    lowest = np.where(inside, codes[None, :], np.iinfo(np.int64).max).min(axis=1)
    highest = np.where(inside, codes[None, :], -1).max(axis=1)
    first = inside.argmax(axis=1)
    return [str(patients[first[q]]) if lowest[q] == highest[q] else None for q in range(len(release))]


@dataclass(frozen=True)
class SinglingOutResult:
    """Outcome of :func:`singling_out_attack`.

    Attributes
    ----------
    attack, control
        Share of predicates that single out one training (resp. control) patient.
    risk
        Anonymeter's excess risk of the attack over the control.
    patients_per_side
        Number of patients on each side (training subsample and control).
    distinct_training, distinct_control
        How many different patients were singled out on each side.
    radius_median
        Median ball radius (for the report).
    """

    attack: Rate
    control: Rate
    risk: Risk
    patients_per_side: int
    distinct_training: int
    distinct_control: int
    radius_median: float

    def to_dict(self) -> dict:
        return {
            "risk": self.risk.value,
            "ci": list(self.risk.ci),
            "residual": self.risk.residual,
            "attack_rate": self.attack.to_dict(),
            "control_rate": self.control.to_dict(),
            "patients_per_side": self.patients_per_side,
            "distinct_training_patients_singled_out": self.distinct_training,
            "distinct_control_patients_singled_out": self.distinct_control,
            "predicates": self.attack.trials,
            "radius_median": self.radius_median,
        }


def singling_out_attack(
    release: EmbeddedImages,
    training: EmbeddedImages,
    control: EmbeddedImages,
    confidence: float = 0.95,
    seed: int = 0,
    quantile: float = DEFAULT_QUANTILE,
) -> SinglingOutResult:
    """Run the ball-predicate attack against equal numbers of training and control patients.

    Examples
    --------
    >>> result = singling_out_attack(release, training, control)  # doctest: +SKIP
    >>> result.risk.value, result.risk.ci  # doctest: +SKIP
    """
    train_side, control_side = size_matched(training, control, seed)
    n_patients = len(train_side.patients())
    radii = ball_radii(release, quantile)
    hits_train = singled_out(release, radii, train_side)
    hits_control = singled_out(release, radii, control_side)
    attack = Rate(sum(h is not None for h in hits_train), len(release), confidence)
    control_rate = Rate(sum(h is not None for h in hits_control), len(release), confidence)
    return SinglingOutResult(
        attack,
        control_rate,
        Risk.from_rates(attack, control_rate),
        n_patients,
        len({h for h in hits_train if h is not None}),
        len({h for h in hits_control if h is not None}),
        float(np.median(radii)),
    )
