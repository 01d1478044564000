"""The guard's decision, shared by the transforms, the generation handler, the monitor and ``monai-pso gate``.

A :class:`GuardCheck` is one reference index with the threshold calibrated for it: an image passes it
when its distance to that index (:func:`~monai_pso.calibrate.nearest_training_items`, with the
threshold's query views) is ``>= tau``. A :class:`PrivacyChecker` holds one or more checks and
releases an image only when it passes *every* one. The recommended default uses two pixel checks, a
whole-image one (catches shifted, turned, re-exposed and noisy copies) and a tile one (catches a
copied region pasted into another image); see ``docs/guard.md``. With a
:class:`~monai_pso.guard.plausibility.PlausibilityCheck` it also refuses, as ``implausible``, an image
farther from the real data than held-out real images are; such an image is never released either.

Fail closed: a bad image (NaN / Inf, values outside ``[0, 1]``, a shape or dimensionality the index was
not built for), an empty or corrupted index, or a threshold made for another embedder or index raises a
:class:`~monai_pso.errors.MonaiPsoError`; nothing is ever released on an error, and a decision to release
requires ``distance >= tau`` (a NaN distance compares false).

Examples
--------
>>> from monai_pso.calibrate import calibrate_threshold
>>> from monai_pso.data import load_source
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> from monai_pso.index import build_index
>>> src = load_source("phantom:2d?patients=12&acquisitions=2&size=32")
>>> index = build_index(src, PixelEmbedder(), progress=False)
>>> threshold = calibrate_threshold(index, None, src, n_bootstrap=20, progress=False)
>>> checker = PrivacyChecker(GuardCheck.create(index, threshold))
>>> checker.names
['pixel']
>>> training_image = src.split("train")[0].image
>>> bool(checker.decide(training_image[None]).released[0])
False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_pso.calibrate.threshold import Threshold
from monai_pso.embed.base import Embedder
from monai_pso.errors import MonaiPsoError
from monai_pso.guard.hashing import PatientHasher
from monai_pso.guard.plausibility import PlausibilityCheck, open_index
from monai_pso.index.query import check_image_batch, nearest_training_items


@dataclass(frozen=True)
class GuardCheck:
    """One reference index and the threshold calibrated for it.

    Build with :meth:`create`, which loads paths and refuses mismatched pieces.

    Parameters
    ----------
    name
        Names the check in logs (``pixel``, ``pixel-tiles``...).
    index
        The :class:`~monai_pso.index.ReferenceIndex`.
    threshold
        Its :class:`~monai_pso.calibrate.Threshold`.
    embedder
        The embedder that built ``index``.
    index_fingerprint, embedder_fingerprint
        Computed once by :meth:`create` (hashing an embedder's weights is not free).
    """

    name: str
    index: Any
    threshold: Threshold
    embedder: Embedder
    index_fingerprint: str = field(default="", compare=False)
    embedder_fingerprint: str = field(default="", compare=False)

    @classmethod
    def create(
        cls,
        index: Any,
        threshold: Threshold | str | Path,
        embedder: Embedder | None = None,
        embedder_dir: str | Path | None = None,
        name: str | None = None,
    ) -> GuardCheck:
        """A check from objects or paths (an index folder, a threshold JSON file).

        Raises
        ------
        IndexIntegrityError
            The index folder is missing, corrupted or empty.
        FingerprintMismatchError
            The embedder did not build the index, or the threshold was calibrated for another
            embedder or index.
        """
        index, embedder = open_index(index, embedder, embedder_dir)
        location = "threshold"
        if not isinstance(threshold, Threshold):
            location, threshold = str(threshold), Threshold.load(threshold)
        threshold.check_compatible(embedder=embedder, index=index, location=location)
        if name is None:
            name = embedder.name + ("-tiles" if getattr(embedder, "tiled", False) else "")
        return cls(name, index, threshold, embedder, index.fingerprint, embedder.fingerprint)  # fingerprints computed once

    @property
    def tau(self) -> float:
        return self.threshold.value

    def measure(self, batch: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Distances ``(B,)`` float64 to the nearest training image, and that image's patient id."""
        found = nearest_training_items(self.index, self.embedder, batch, self.threshold.views)
        return np.asarray(found.distance, np.float64), list(found.patient_id)


@dataclass
class Decisions:
    """The guard's verdict on a batch of images.

    ``nn_distance``, ``threshold``, ``check`` and ``nearest_patient_hash`` describe, per image, the check
    that decides it: the one it fails by most (or, when it passes all, the one it passes by least, as
    a share of tau). So ``private == (nn_distance >= threshold)`` holds row by row, and
    ``released == private & ~implausible``.

    Parameters
    ----------
    released
        ``(B,)`` bool.
    nn_distance, threshold
        ``(B,)`` float64 of the deciding check.
    check
        Name of the deciding check per image.
    nearest_patient_hash
        Salted hash of the nearest training patient in the deciding check.
    distances
        Per check name, ``(B,)`` distances.
    taus
        Per check name, its tau.
    private
        ``(B,)`` bool: passed every copy check (default: ``released``).
    plausibility_distance, plausibility_radius
        ``(B,)`` distances to the ``k``-th nearest training image in the fidelity embedding and the
        radius, or ``None`` without a plausibility check.
    """

    released: np.ndarray
    nn_distance: np.ndarray
    threshold: np.ndarray
    check: list[str]
    nearest_patient_hash: list[str]
    distances: dict[str, np.ndarray]
    taus: dict[str, float]
    private: np.ndarray | None = None
    plausibility_distance: np.ndarray | None = None
    plausibility_radius: float | None = None

    def __post_init__(self) -> None:
        if self.private is None:
            self.private = np.asarray(self.released, bool).copy()

    @property
    def implausible(self) -> np.ndarray:
        """``(B,)`` bool: beyond the plausibility radius (all ``False`` without a plausibility check)."""
        if self.plausibility_distance is None:
            return np.zeros(len(self.released), bool)
        return ~(self.plausibility_distance <= self.plausibility_radius)

    def outcome(self, i: int) -> str:
        """``released``, ``too_close`` (failed a copy check) or ``implausible`` (passed them, beyond the radius)."""
        return "released" if self.released[i] else ("too_close" if not self.private[i] else "implausible")

    def __len__(self) -> int:
        return len(self.released)

    def row(self, i: int) -> dict[str, Any]:
        """The decision on image ``i`` as audit-log fields (:func:`~monai_pso.guard.audit_log.audit_columns`)."""
        row: dict[str, Any] = {
            "released": bool(self.released[i]),
            "outcome": self.outcome(i),
            "nn_distance": float(self.nn_distance[i]),
            "threshold": float(self.threshold[i]),
            "check": self.check[i],
            "nearest_patient_hash": self.nearest_patient_hash[i],
        }
        for name, distances in self.distances.items():
            tau = self.taus[name]
            row.update({f"{name}_distance": float(distances[i]), f"{name}_tau": tau, f"{name}_decision": "pass" if distances[i] >= tau else "fail"})
        if self.plausibility_distance is not None:  # without a plausibility check its audit cells stay empty
            row.update(
                plausibility_distance=float(self.plausibility_distance[i]),
                plausibility_radius=float(self.plausibility_radius),
                plausibility_decision="fail" if self.implausible[i] else "pass",
            )
        return row


class PrivacyChecker:
    """Decide which images may be released: every check must find them at ``distance >= tau`` (and, with
    a plausibility check, within its radius).

    Parameters
    ----------
    checks
        One :class:`GuardCheck` or several (all must pass).
    hasher
        Salts the nearest patient's id in decisions; default: a random salt held only in memory.
    ledger_dir
        Folder of the release ledger of releases made with this guard (the primary index's folder);
        ``None`` for a guard never saved.
    plausibility
        A :class:`~monai_pso.guard.plausibility.PlausibilityCheck`: images beyond its radius are
        refused as ``implausible``; ``None``: no plausibility check.
    identity
        The guard folder's ``identity`` block (``guard.json``, :mod:`monai_pso.guard.identity`): whether
        identity is certified and why; ``None`` for a checker not loaded from a guard folder.

    Build one from a guard folder or saved parts with :func:`monai_pso.guard.load_checker`.
    """

    def __init__(
        self,
        checks: GuardCheck | Sequence[GuardCheck],
        hasher: PatientHasher | None = None,
        ledger_dir: str | Path | None = None,
        plausibility: PlausibilityCheck | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.checks = [checks] if isinstance(checks, GuardCheck) else list(checks)
        if not self.checks:
            raise MonaiPsoError("the privacy checker needs at least one check")
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            self.checks = [replace(c, name=f"{c.name}-{i}") for i, c in enumerate(self.checks)]
        self.hasher = hasher or PatientHasher()
        self.ledger_dir = None if ledger_dir is None else Path(ledger_dir)
        self.plausibility = plausibility
        self.identity = identity

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def with_hasher(self, hasher: PatientHasher) -> PrivacyChecker:
        """The same checks with another salt for the nearest-patient hashes (e.g. one private to a release)."""
        return PrivacyChecker(self.checks, hasher, self.ledger_dir, self.plausibility, self.identity)

    def with_plausibility(self, plausibility: PlausibilityCheck | None) -> PrivacyChecker:
        """The same copy checks with another plausibility check (``None``: without one)."""
        return PrivacyChecker(self.checks, self.hasher, self.ledger_dir, plausibility, self.identity)

    def certificate(self, decision: dict[str, Any], release_id: str) -> dict[str, Any]:
        """What a released file's header records of its decision: tau, distance, fingerprints of the deciding check."""
        check = next(c for c in self.checks if c.name == decision["check"])
        return {
            "tau": decision["threshold"],
            "nn_distance": decision["nn_distance"],
            "index_fingerprint": check.index_fingerprint,
            "embedder_fingerprint": check.embedder_fingerprint,
            "release_id": release_id,
        }

    @property
    def taus(self) -> dict[str, float]:
        return {c.name: c.tau for c in self.checks}

    def decide(self, images: torch.Tensor | np.ndarray) -> Decisions:
        """Check a batch ``(B, 1, *spatial)`` in ``[0, 1]`` against every check."""
        batch = check_image_batch(images, None)
        measured = [check.measure(batch) for check in self.checks]
        distances = np.stack([d for d, _ in measured])  # (checks, B)
        taus = np.array([c.tau for c in self.checks])[:, None]
        passed = distances >= taus
        private = passed.all(axis=0)
        plausibility_distance = None if self.plausibility is None else self.plausibility.measure(batch)
        radius = None if self.plausibility is None else self.plausibility.radius.value
        released = private if plausibility_distance is None else private & (plausibility_distance <= radius)
        ratio = distances / taus
        deciding = np.where(private, ratio.argmin(axis=0), np.where(passed, np.inf, ratio).argmin(axis=0))
        columns = np.arange(len(batch))
        return Decisions(
            released=released,
            nn_distance=distances[deciding, columns],
            threshold=taus[deciding, 0],
            check=[self.checks[k].name for k in deciding],
            nearest_patient_hash=[self.hasher(measured[k][1][i]) for i, k in enumerate(deciding)],
            distances={c.name: distances[k] for k, c in enumerate(self.checks)},
            taus=self.taus,
            private=private,
            plausibility_distance=plausibility_distance,
            plausibility_radius=radius,
        )

    def provenance(self) -> dict[str, Any]:
        """Per check: tau, its rule, the embedder and index fingerprints (for manifests and summaries)."""
        return {
            c.name: {
                "tau": c.tau,
                "rule": c.threshold.applied_rule,
                "query_views": c.threshold.query_views,
                "embedder": c.embedder.name,
                "embedder_fingerprint": c.embedder_fingerprint,
                "index_fingerprint": c.index_fingerprint,
                "index_source": c.index.source,
                "threshold_created": c.threshold.created,
            }
            for c in self.checks
        }

    def plausibility_provenance(self) -> dict[str, Any] | None:
        """The plausibility check's radius, calibration and fingerprints, or ``None`` without one."""
        return None if self.plausibility is None else self.plausibility.provenance()
