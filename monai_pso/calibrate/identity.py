"""How well an identity check protects, measured as the guard decides: nearest distances of new images.

Two kinds of probe, both real images the reference set does not hold: a **trained** patient's new
image (the patient's other images are in the reference set: a synthetic image showing them should be
refused) and an **unseen** patient's image (nobody in the reference set: it should be released). For
each probe the guard's check gives its distance to the nearest reference image. :func:`measure_identity`
reports

- ``auc``: P(a trained patient's probe lies nearer the reference set than an unseen patient's probe)
  + half the ties (Mann-Whitney; 0.5: the check cannot tell them apart);
- ``refused_trained``: the share of trained patients' new images the check refuses at tau (``< tau``);
- ``released_unseen``: the share of unseen patients' images it releases (``>= tau``);

each with a patient-bootstrap interval (the patients of both kinds resampled together).
:func:`holdout_identity` measures them on a guard's own held-out patients (the identity check's certification).

Examples
--------
>>> m = measure_identity(np.array([0.1, 0.2, 0.3]), np.array(["a", "b", "c"]), np.array([0.25, 0.4, 0.5, 0.6]),
...                      np.array(["x", "x", "y", "z"]), tau=0.35, n_bootstrap=200)
>>> round(m.auc, 3), m.refused_trained, m.released_unseen
(0.917, 1.0, 0.75)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from monai_pso.calibrate.bootstrap import PatientResampler, auc_smaller, percentile_interval
from monai_pso.calibrate.distances import holdout_distances, same_patient_distances


@dataclass(frozen=True)
class IdentityMeasure:
    """The identity check's figures on trained and unseen patients' probes (see the module docstring).

    Examples
    --------
    >>> IdentityMeasure(0.8, (0.7, 0.9), 0.6, (0.5, 0.7), 0.7, (0.6, 0.8), 1.0, 20, 20, 40, 20).to_dict()["auc"]
    0.8
    """

    auc: float
    auc_interval: tuple[float, float]
    refused_trained: float
    refused_trained_interval: tuple[float, float]
    released_unseen: float
    released_unseen_interval: tuple[float, float]
    tau: float
    n_trained_probes: int
    n_trained_patients: int
    n_unseen_probes: int
    n_unseen_patients: int

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def describe(self) -> str:
        return (
            f"AUC {self.auc:.3f} [{self.auc_interval[0]:.3f}, {self.auc_interval[1]:.3f}]; at tau {self.tau:.4g}: "
            f"{self.refused_trained:.1%} of {self.n_trained_probes} trained patients' new images refused, "
            f"{self.released_unseen:.1%} of {self.n_unseen_probes} unseen patients' images released"
        )


def measure_identity(
    trained: np.ndarray,
    trained_patients: np.ndarray,
    unseen: np.ndarray,
    unseen_patients: np.ndarray,
    tau: float,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> IdentityMeasure:
    """The figures of :class:`IdentityMeasure` from the probes' nearest distances.

    Parameters
    ----------
    trained, trained_patients
        Nearest-reference distances of trained patients' new images, and their patients.
    unseen, unseen_patients
        The same for unseen patients' images (patients absent from the reference set).
    tau
        The check's threshold (``distance < tau``: refused).
    n_bootstrap, seed, confidence
        The patient bootstrap of the intervals.
    """
    trained, unseen = np.asarray(trained, np.float64), np.asarray(unseen, np.float64)
    values = np.concatenate([trained, unseen])
    first = np.concatenate([np.ones(len(trained), bool), np.zeros(len(unseen), bool)])
    patients = np.concatenate([np.char.add("trained:", np.asarray(trained_patients, str)), np.char.add("unseen:", np.asarray(unseen_patients, str))])
    resampler, rng = PatientResampler(patients), np.random.default_rng(seed)
    replicates = np.empty((n_bootstrap, 3))
    for i in range(n_bootstrap):
        chosen = resampler.sample(rng)
        a, b = values[chosen[first[chosen]]], values[chosen[~first[chosen]]]
        replicates[i] = auc_smaller(a, b), np.mean(a < tau) if len(a) else np.nan, np.mean(b >= tau) if len(b) else np.nan
    intervals = [percentile_interval(replicates[~np.isnan(replicates[:, k]), k], confidence) for k in range(3)]
    return IdentityMeasure(
        auc=auc_smaller(trained, unseen),
        auc_interval=intervals[0],
        refused_trained=float(np.mean(trained < tau)),
        refused_trained_interval=intervals[1],
        released_unseen=float(np.mean(unseen >= tau)),
        released_unseen_interval=intervals[2],
        tau=float(tau),
        n_trained_probes=len(trained),
        n_trained_patients=len(set(np.asarray(trained_patients).tolist())),
        n_unseen_probes=len(unseen),
        n_unseen_patients=len(set(np.asarray(unseen_patients).tolist())),
    )


def holdout_identity(
    index: Any,
    embedder: Any,
    holdout: Any,
    tau: float,
    views: Any = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    progress: bool = False,
) -> IdentityMeasure | None:
    """:func:`measure_identity` on a guard's own held-out patients, with no second index.

    The held-out patients with two or more images are drawn at random into halves. A *trained* patient's
    image is a probe whose patient's other images are in the reference set: its nearest distance is the
    smaller of its distance to the training index and to that patient's nearest other image. An
    *unseen* patient's image is a probe against the training index alone. ``None`` when fewer than two
    held-out patients have two or more images.

    Parameters
    ----------
    index, embedder, views
        The check's index, its embedder and the threshold's query views.
    holdout
        The held-out data source (the calibration's split).
    tau, n_bootstrap, seed, confidence, progress
        As in :func:`measure_identity`; progress bars.

    Examples
    --------
    >>> from monai_pso.data import load_source
    >>> from monai_pso.embed.pixel import PixelEmbedder
    >>> from monai_pso.index import build_index
    >>> src = load_source("phantom:2d?patients=30&acquisitions=2&size=16")
    >>> index = build_index(src, PixelEmbedder(), progress=False)
    >>> m = holdout_identity(index, PixelEmbedder(), src.split("val"), tau=0.05, n_bootstrap=50)
    >>> m.n_trained_patients + m.n_unseen_patients == len([p for p, r in src.split("val").by_patient().items() if len(r) >= 2])
    True
    """
    to_index = holdout_distances(index, embedder, holdout, views, progress=progress)
    same = same_patient_distances(embedder, holdout, views, index, progress)
    position = {record.item_id: i for i, record in enumerate(holdout.records)}
    order = np.array([position[r.item_id] for records in holdout.by_patient().values() if len(records) >= 2 for r in records], dtype=int)
    if not np.array_equal(to_index.patients[order], same.patients):  # same_patient_distances walks by_patient() in this order
        raise AssertionError("same-patient distances are not in by_patient() order")
    names = np.random.default_rng(seed).permutation(np.unique(same.patients))
    if len(names) < 2:
        return None
    trained = np.isin(same.patients, names[: len(names) // 2])
    nearest_trained = np.minimum(to_index.values[order], same.values)[trained]
    return measure_identity(nearest_trained, same.patients[trained], to_index.values[order][~trained], same.patients[~trained], tau, n_bootstrap, seed, confidence)
