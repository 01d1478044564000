"""Run every audit test on one release: embed the cohorts once, then DCR, singling out, membership, copies.

The first embedder is the *audit embedding*: all tests run in it. It should be independent of the
guard's (another pixel grid, or a trained re-identification network) so that the audit does not only
re-check the distance the guard already enforced. Further embedders (and the guard's own, with the
release threshold ``tau``) add rows to the copy-rate table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monai_pso.audit.cohorts import check_disjoint
from monai_pso.audit.copy_rate import DEFAULT_FRACTIONS, CopyRateRow, copy_levels, copy_rate_table
from monai_pso.audit.dcr import DEFAULT_QUANTILE as DCR_QUANTILE
from monai_pso.audit.dcr import DcrResult, dcr_test
from monai_pso.audit.distances import EmbeddedImages, Nearest, embed_records, nearest, patient_minimum
from monai_pso.audit.fidelity import DEFAULT_NEAREST_K, SCORES, FidelityResult, fidelity_audit
from monai_pso.audit.membership import MembershipResult, membership_signal
from monai_pso.audit.singling_out import DEFAULT_QUANTILE, SinglingOutResult, singling_out_attack
from monai_pso.audit.verdict import conclude, measurability
from monai_pso.data import ImageRecord, load_image
from monai_pso.embed.base import Embedder
from monai_pso.embed.fidelity import FidelityEmbedder
from monai_pso.errors import ConfigurationError, DataSourceError


@dataclass
class AuditSettings:
    """Knobs of an audit; all are recorded in ``report.json``.

    Parameters
    ----------
    confidence
        Level of every interval and ``1 - confidence`` the significance level of the DCR test.
    seed
        Seed of the patient subsamples, of the holdout image kept per patient and of the bootstraps.
    n_resamples
        Bootstrap replicates of the membership and DCR AUC intervals.
    fractions
        Copy-rate levels as fractions of the median holdout-to-training distance.
    batch_size
        Images per embedding batch.
    pairs_shown
        Closest released/training pairs kept for the report's pictures.
    singling_quantile
        Cap of the singling-out ball radius, as a quantile of the release's nearest-neighbour distances.
    dcr_quantile
        ``q`` of the DCR close share: released images closer to training than the holdout's ``q``-th
        percentile distance to training.
    fidelity
        Also measure fidelity, diversity and authenticity (:mod:`monai_pso.audit.fidelity`) in the
        ``fidelity`` embedding, with the real-data baseline.
    nearest_k
        ``k`` of the fidelity figures' nearest-neighbour balls.
    """

    confidence: float = 0.95
    seed: int = 0
    n_resamples: int = 1000
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    batch_size: int = 32
    pairs_shown: int = 6
    singling_quantile: float = DEFAULT_QUANTILE
    dcr_quantile: float = DCR_QUANTILE
    fidelity: bool = True
    nearest_k: int = DEFAULT_NEAREST_K


@dataclass
class AuditCohorts:
    """The records an audit compares: the release and three disjoint groups of real patients."""

    release: Sequence[ImageRecord]
    training: Sequence[ImageRecord]
    holdout: Sequence[ImageRecord]
    control: Sequence[ImageRecord]

    def check(self) -> None:
        """Raise when a cohort is empty or two groups of real patients share a patient."""
        for name in ("release", "training", "holdout", "control"):
            if not getattr(self, name):
                raise DataSourceError(name, "holds no images; an audit needs all four cohorts")
        if len(self.release) < 2:
            raise DataSourceError("release", "an audit needs at least two released images")
        check_disjoint({name: [r.patient_id for r in getattr(self, name)] for name in ("training", "holdout", "control")})


@dataclass
class GuardReference:
    """What the audit knows of the guard that made the release (all optional).

    Parameters
    ----------
    embedder
        The guard's embedder; adds copy-rate rows in its embedding, with ``threshold`` as a level.
    threshold
        The release's ``tau``.
    embedder_fingerprint, index_fingerprint
        Recorded in the report; the first tells whether the audit embedding is independent.
    identity_embedder
        The network of the guard's identity check (``GUARD_DIR/identity/embedder``): adds singling out
        in the identity embedding (a released image the re-identification links to exactly one training patient).
    """

    embedder: Embedder | None = None
    threshold: float | None = None
    embedder_fingerprint: str | None = None
    index_fingerprint: str | None = None
    identity_embedder: Embedder | None = None


@dataclass(frozen=True)
class NearestPair:
    """A released image and the training image nearest to it in the audit embedding."""

    released: ImageRecord
    training: ImageRecord
    distance: float


@dataclass
class AuditResult:
    """Every figure of an audit; :meth:`to_dict` is the body of ``report.json``."""

    embedder: str
    embedder_fingerprint: str
    dcr: DcrResult
    singling_out: SinglingOutResult
    membership: MembershipResult
    copy_rates: list[CopyRateRow]
    counts: dict[str, int]
    settings: AuditSettings
    guard: GuardReference
    released_to_training: np.ndarray  #: per released image, its distance to the nearest image of the full training set
    holdout_to_training: np.ndarray  #: per holdout image of the DCR test (one per patient), the same distance
    nearest_pairs: list[NearestPair]
    warnings: list[str] = field(default_factory=list)
    fidelity: FidelityResult | None = None  #: fidelity, diversity and authenticity, with the real baseline
    identity_singling_out: SinglingOutResult | None = None  #: singling out in the guard's identity embedding, when it has one

    @property
    def independent_of_guard(self) -> bool | None:
        """Whether the audit embedding differs from the guard's (``None`` when the guard's is unknown)."""
        known = self.guard.embedder_fingerprint
        return None if known is None else known != self.embedder_fingerprint

    @property
    def conclusion(self) -> str:
        return conclude(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "conclusion": self.conclusion,
            "dcr_auc": self.dcr.auc,
            "dcr_auc_ci": list(self.dcr.auc_ci),
            "dcr_close_share": self.dcr.close.value,
            "dcr_close_share_ci": list(self.dcr.close.ci),
            "dcr_p_value": self.dcr.p_value,
            "singling_out_risk": self.singling_out.risk.value,
            "singling_out_risk_ci": list(self.singling_out.risk.ci),
            "membership_auc": self.membership.auc,
            "membership_auc_ci": list(self.membership.ci),
            "confidence": self.settings.confidence,
            **self._fidelity_keys(),
            "measurability": measurability(self).to_dict(),
            "dcr": self.dcr.to_dict(),
            "singling_out": self.singling_out.to_dict(),
            "identity_singling_out": None if self.identity_singling_out is None else self.identity_singling_out.to_dict(),
            "membership": self.membership.to_dict(),
            "copy_rate": [row.to_dict() for row in self.copy_rates],
            "counts": dict(self.counts),
            "embedder": {"name": self.embedder, "fingerprint": self.embedder_fingerprint},
            "independent_of_guard": self.independent_of_guard,
            "fingerprints": {
                "audit_embedder": self.embedder_fingerprint,
                "guard_embedder": self.guard.embedder_fingerprint,
                "index": self.guard.index_fingerprint,
            },
            "threshold": self.guard.threshold,
            "nearest_pairs": [
                {"released": p.released.item_id, "training": p.training.item_id, "training_patient": p.training.patient_id, "distance": p.distance}
                for p in self.nearest_pairs
            ],
            "settings": {
                "seed": self.settings.seed,
                "bootstrap_resamples": self.settings.n_resamples,
                "copy_fractions": list(self.settings.fractions),
                "singling_quantile": self.settings.singling_quantile,
                "dcr_quantile": self.settings.dcr_quantile,
                "fidelity_nearest_k": self.settings.nearest_k,
            },
            "warnings": list(self.warnings),
        }

    def _fidelity_keys(self) -> dict[str, Any]:
        """Top-level ``precision``, ``recall``, ... with ``*_ci``, ``fid``, ``kid``, the feature space and the baseline row (``None`` when not measured)."""
        names = [*SCORES, "kid"]
        if self.fidelity is None:
            empty = {key: None for name in names for key in (name, f"{name}_ci")}
            return {**empty, "fid": None, "fidelity": None, "fidelity_feature_space": None, "fidelity_baseline": None}
        release = self.fidelity.release.to_dict()
        keys = {key: release.pop(key) for name in names for key in (name, f"{name}_ci")}
        keys["fid"] = release.pop("fid")
        return {**keys, "fidelity": release, "fidelity_feature_space": self.fidelity.feature_space, "fidelity_baseline": self.fidelity.baseline.to_dict()}


def embedder_label(embedder: Embedder) -> str:
    """``name:fingerprint-prefix``, short enough for tables."""
    return f"{embedder.name or type(embedder).__name__}:{embedder.fingerprint[:8]}"


def _copy_rows(
    label: str, to_training: Nearest, holdout_to_training: np.ndarray, training: EmbeddedImages, settings: AuditSettings, tau: float | None
) -> list[CopyRateRow]:
    """Copy-rate rows of one embedding, from each released image's nearest training image and the holdout's distances."""
    patients = [training.records[i].patient_id for i in to_training.index]
    levels = copy_levels(holdout_to_training, settings.fractions, tau)
    return copy_rate_table(label, to_training.distance, patients, holdout_to_training, levels, settings.confidence)


def _embed_all(cohorts: AuditCohorts, embedder: Embedder, settings: AuditSettings, names: Sequence[str]) -> dict[str, EmbeddedImages]:
    return {name: embed_records(getattr(cohorts, name), embedder, settings.batch_size, f"{name} ({embedder.name})") for name in names}


def fidelity_of(cohorts: AuditCohorts, settings: AuditSettings) -> FidelityResult:
    """Fidelity, diversity and authenticity of the release, and the real baseline, in the ``fidelity`` embedding."""
    embedder = FidelityEmbedder(spatial_dims=load_image(cohorts.release[0]).ndim - 1)
    sets = _embed_all(cohorts, embedder, settings, ("release", "training", "holdout"))
    features = {name: embedded.reference.vectors[:, 0] for name, embedded in sets.items()}
    space = {"name": embedder.name, "fingerprint": embedder.fingerprint, "settings": embedder.settings}
    return fidelity_audit(
        features["release"], features["holdout"], features["training"], space,
        settings.nearest_k, settings.confidence, settings.n_resamples, settings.seed,
    )  # fmt: skip


def run_audit(
    cohorts: AuditCohorts,
    embedders: Sequence[Embedder],
    settings: AuditSettings | None = None,
    guard: GuardReference | None = None,
) -> AuditResult:
    """Audit a release against its training patients, a holdout and a control group.

    Parameters
    ----------
    cohorts
        Released images (any generator), training records (the patients the generator saw), holdout
        and control records (patients it never saw; disjoint).
    embedders
        The audit embedding first; the others only add copy-rate rows.
    settings, guard
        See :class:`AuditSettings` and :class:`GuardReference`.

    Examples
    --------
    >>> result = run_audit(AuditCohorts(release, train, holdout, control), [default_audit_embedder(2)])  # doctest: +SKIP
    >>> result.conclusion  # doctest: +SKIP
    'no measurable excess singling-out risk (upper 95% bound 0.04), ...'
    """
    settings = settings or AuditSettings()
    guard = guard or GuardReference()
    if not embedders:
        raise ConfigurationError("embedders: none given; an audit needs at least one embedder")
    cohorts.check()
    primary = embedders[0]
    sets = _embed_all(cohorts, primary, settings, ("release", "training", "holdout", "control"))
    release, training, holdout, control = (sets[n] for n in ("release", "training", "holdout", "control"))

    # DCR: every released image and one image per holdout patient, each against the FULL training set
    dcr, dcr_distances = dcr_test(
        release, training, holdout, control,
        confidence=settings.confidence, quantile=settings.dcr_quantile, n_resamples=settings.n_resamples, seed=settings.seed,
    )  # fmt: skip
    release_nearest, holdout_to_training, reference = dcr_distances.released, dcr_distances.holdout, dcr_distances.reference
    singling = singling_out_attack(release, training, control, settings.confidence, settings.seed, settings.singling_quantile)
    identity_singling = None
    if guard.identity_embedder is not None:
        linked = _embed_all(cohorts, guard.identity_embedder, settings, ("release", "training", "control"))
        identity_singling = singling_out_attack(linked["release"], linked["training"], linked["control"], settings.confidence, settings.seed, settings.singling_quantile)
    members = patient_minimum(nearest(training, release).distance, training.patient_ids)[1]
    non_members = patient_minimum(nearest(holdout, release).distance, holdout.patient_ids)[1]
    membership = membership_signal(members, non_members, settings.confidence, settings.n_resamples, settings.seed)

    label = embedder_label(primary)
    primary_tau = guard.threshold if guard.embedder_fingerprint == primary.fingerprint else None
    copy_rows = _copy_rows(label, release_nearest, holdout_to_training, training, settings, primary_tau)
    order = np.argsort(release_nearest.distance, kind="stable")[: settings.pairs_shown]
    pairs = [NearestPair(release.records[i], training.records[release_nearest.index[i]], float(release_nearest.distance[i])) for i in order]

    extra = list(embedders[1:])
    if guard.embedder is not None and guard.embedder.fingerprint not in {e.fingerprint for e in embedders}:
        extra.append(guard.embedder)
    for embedder in extra:
        other = _embed_all(cohorts, embedder, settings, ("release", "training", "holdout"))
        tau = guard.threshold if embedder.fingerprint == guard.embedder_fingerprint else None
        other_nearest = nearest(other["release"], other["training"])
        other_holdout = nearest(other["holdout"], other["training"]).distance
        copy_rows += _copy_rows(embedder_label(embedder), other_nearest, other_holdout, other["training"], settings, tau)

    fidelity = fidelity_of(cohorts, settings) if settings.fidelity and len(holdout) > settings.nearest_k else None
    counts = {
        "released_images": len(release),
        "training_patients": len(training.patients()),
        "training_images": len(training),
        "holdout_patients": len(holdout.patients()),
        "holdout_images": len(holdout),
        "control_patients": len(control.patients()),
        "control_images": len(control),
        "dcr_training_images": len(training),
        "dcr_holdout_images": len(reference),
        "singling_out_patients_per_side": singling.patients_per_side,
    }
    warnings = _warnings(counts, guard, primary, dcr, settings.confidence)
    if settings.fidelity and fidelity is None:
        warnings.append(f"fidelity figures not measured: {len(holdout)} holdout images, the k-NN balls need more than k={settings.nearest_k}")
    return AuditResult(
        label,
        primary.fingerprint,
        dcr,
        singling,
        membership,
        copy_rows,
        counts,
        settings,
        guard,
        release_nearest.distance,
        holdout_to_training[reference],
        pairs,
        warnings,
        fidelity,
        identity_singling,
    )


def _warnings(counts: dict[str, int], guard: GuardReference, primary: Embedder, dcr: DcrResult, confidence: float) -> list[str]:
    """Plain-language caveats that belong next to the figures."""
    notes = []
    if guard.embedder_fingerprint is not None and guard.embedder_fingerprint == primary.fingerprint:
        notes.append("the audit embedding is the guard's own: the audit re-checks the guard's distance and is not independent of it")
    if dcr.holdout_at_zero:
        notes.append(
            f"{dcr.holdout_at_zero} holdout image(s) lie at distance 0 from a training image: the source holds duplicates across "
            "the training/holdout split, which makes the DCR reference look like copies and the DCR test weaker"
        )
    if dcr.shift is not None and dcr.shift.p_value < 1.0 - confidence:
        side = "closer to" if dcr.shift.auc > 0.5 else "farther from"
        notes.append(
            f"the released images lie {side} the control patients (never trained on) than holdout images do (AUC {dcr.shift.auc:.2f}, "
            f"p = {dcr.shift.p_value:.2g}): the release is not distributed like real images in this embedding, so the DCR test's "
            + (
                "reference does not describe it and part of a small DCR p-value may be this difference, not memorisation"
                if side == "closer to"
                else "reference does not describe it and copies among farther images are harder to see; read the copy rates"
            )
        )
    if min(counts["dcr_holdout_images"], counts["singling_out_patients_per_side"]) < 10:
        notes.append("fewer than 10 patients per side: the intervals are wide and a null result says little")
    if primary.name == "pixel":
        notes.append("pixel-space distances see copies and near-copies, not semantic copies (same anatomy, new pose or contrast)")
    return notes
