"""The calibrated threshold tau as a saved artefact: value, how it was made, and for which embedder.

A :class:`Threshold` is written by :func:`monai_pso.calibrate.calibrate_threshold` and read by the
gate. The JSON file records everything needed to judge it (rule, percentiles, counts, bootstrap
intervals, the utility cost, notes) and the fingerprints of the embedder and the reference index it
was calibrated against; :meth:`Threshold.load` refuses to pair it with any other.

The file also carries an integrity hash, ``content_sha256``: the sha256 of the canonical JSON (sorted
keys, no whitespace, UTF-8; as the release ledger hashes its entries) of everything else in it. A file
whose value, rule, query views or any other field was edited after it was written, or that carries no
hash (written by an older version), is refused with :class:`~monai_pso.errors.IntegrityError`: calibrate
again instead. The guard folder's ``guard.json`` is sealed the same way (:func:`seal`, :func:`check_seal`).
It detects edits, not a forger who recomputes the hash: keep the files where only the guard's owner writes.

Decision convention everywhere: an image whose distance to the training set is ``< value`` is too
close and is not released; ``>= value`` passes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from monai_pso import __version__
from monai_pso.embed.views import QueryViews
from monai_pso.errors import ConfigurationError, DataSourceError, FingerprintMismatchError, IntegrityError
from monai_pso.io import canonical_json, read_json, write_json_atomically

T = TypeVar("T")

#: Written into every threshold file; :meth:`Threshold.load` refuses other formats.
THRESHOLD_FORMAT = "monai-pso/threshold/1"

#: Rules that combine the two candidate thresholds.
RULES = ("max", "holdout", "same")

#: Key of the integrity hash in a threshold file (and in ``guard.json``).
INTEGRITY_KEY = "content_sha256"


def content_sha256(document: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``document`` without its :data:`INTEGRITY_KEY`.

    Canonical JSON as :func:`monai_pso.io.canonical_json`: sorted keys, no whitespace, UTF-8, no NaN.

    Examples
    --------
    >>> content_sha256({"b": 1, "a": [1.5, None]}) == content_sha256({"a": [1.5, None], "b": 1, INTEGRITY_KEY: "x"})
    True
    """
    return hashlib.sha256(canonical_json({key: value for key, value in document.items() if key != INTEGRITY_KEY})).hexdigest()


def seal(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with its integrity hash (:func:`content_sha256`) under :data:`INTEGRITY_KEY`."""
    return {**document, INTEGRITY_KEY: content_sha256(document)}


def check_seal(document: Mapping[str, Any], path: str | Path, what: str, remedy: str) -> None:
    """Raise :class:`~monai_pso.errors.IntegrityError` naming ``path`` unless ``document``'s hash matches its content.

    Examples
    --------
    >>> check_seal(seal({"value": 2.0}), "tau.json", "threshold file", "calibrate again")
    >>> check_seal({**seal({"value": 2.0}), "value": 1.0}, "tau.json", "threshold file", "calibrate again")
    Traceback (most recent call last):
    ...
    monai_pso.errors.IntegrityError: tau.json: threshold file was edited after it was written (its content_sha256 does not match its content); calibrate again
    """
    recorded = document.get(INTEGRITY_KEY)
    if recorded is None:
        raise IntegrityError.at(path, f"{what} carries no integrity hash ({INTEGRITY_KEY}; written by an older monai-pso version); {remedy}")
    try:
        actual = content_sha256(document)
    except (TypeError, ValueError):  # NaN or values JSON cannot hold: not what save wrote
        actual = None
    if recorded != actual:
        raise IntegrityError.at(path, f"{what} was edited after it was written (its {INTEGRITY_KEY} does not match its content); {remedy}")


def read_sealed(path: str | Path, file_format: str, what: str, remedy: str, parse: Callable[[dict[str, Any]], T]) -> T:
    """A calibration file written with :func:`seal`: its format and integrity hash checked, then ``parse``-d.

    Raises :class:`~monai_pso.errors.DataSourceError` (missing, another format, malformed) or
    :class:`~monai_pso.errors.IntegrityError` (edited, or no hash), each naming ``path``.
    """
    content = read_json(path, what=what)
    if not isinstance(content, dict) or content.get("format") != file_format:
        raise DataSourceError(path, f"not a {what} (expected format {file_format!r})")
    check_seal(content, path, what, remedy)
    try:
        return parse(content)
    except (KeyError, TypeError, ValueError) as error:
        raise DataSourceError(path, f"malformed {what} ({error})") from None


def check_fingerprints(calibrated: Any, embedder: Any, index: Any, location: str, what: str, remedy: str) -> None:
    """Raise :class:`~monai_pso.errors.FingerprintMismatchError` unless ``embedder`` / ``index`` (when given) are the
    ones ``calibrated`` (a threshold or radius: ``embedder_fingerprint``, ``embedder_name``, ``index_fingerprint``) was made for."""
    if embedder is not None and embedder.fingerprint != calibrated.embedder_fingerprint:
        raise FingerprintMismatchError(
            f"{location}: {what} was calibrated for embedder {calibrated.embedder_fingerprint[:12]} "
            f"({calibrated.embedder_name or 'unknown'}), not for {embedder.fingerprint[:12]} ({getattr(embedder, 'name', '?')})"
        )
    if index is not None and index.fingerprint != calibrated.index_fingerprint:
        raise FingerprintMismatchError(f"{location}: {what} was calibrated against index {calibrated.index_fingerprint[:12]}, not {index.fingerprint[:12]}; {remedy}")


@dataclass(frozen=True)
class ThresholdPart:
    """One candidate threshold: a percentile of one distribution of image-to-image distances.

    Parameters
    ----------
    name
        ``"holdout"`` (held-out patients to the training index) or ``"same"`` (between different
        images of one patient).
    value
        The percentile.
    percentile
        Which percentile (0..100).
    interval
        Bootstrap confidence interval of ``value`` (patients resampled).
    n_images, n_patients
        How many distances (images) and patients the percentile was taken over.
    sources
        Descriptions of the data the distances came from.

    Examples
    --------
    >>> ThresholdPart("holdout", 2.0, 5.0, (1.5, 2.5), 40, 20, ("phantom:2d [split=val]",)).value
    2.0
    """

    name: str
    value: float
    percentile: float
    interval: tuple[float, float]
    n_images: int
    n_patients: int
    sources: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> ThresholdPart:
        return cls(**{**content, "interval": tuple(content["interval"]), "sources": tuple(content.get("sources", ()))})


@dataclass(frozen=True)
class VerificationAUC:
    """Whether same-patient distances are smaller than different-patient ones, measured as the guard sees them.

    Over the images of held-out patients with two or more images: AUC = P(an image's distance to the
    nearest *other image of its own patient* < an image's distance to the nearest *training* image,
    all of another patient) + half the ties (Mann-Whitney), with a patient-bootstrap interval. 1: a
    re-acquisition always lies nearer its own patient than the nearest stranger of the training set;
    0.5: no better than chance; below 0.5: strangers lie nearer (tau_same would then refuse strangers'
    images for no reason of identity). See ``docs/guard.md``.

    Parameters
    ----------
    value, interval
        The AUC and its bootstrap confidence interval (patients resampled).
    n_images, n_patients
        Held-out images and patients (each with two or more images) it was measured over.
    min_auc, min_patients
        The criterion: tau_same counts only when ``value >= min_auc``, the interval's lower end is
        above 0.5 and ``n_patients >= min_patients``; ``min_auc=None``: no criterion (always counts).
    meaningful
        Whether the criterion holds.
    reason
        The criterion's verdict in words.

    Examples
    --------
    >>> VerificationAUC(0.93, (0.85, 0.99), 60, 20, 0.7, 10, True, "").meaningful
    True
    """

    value: float
    interval: tuple[float, float]
    n_images: int
    n_patients: int
    min_auc: float | None = 0.7
    min_patients: int = 10
    meaningful: bool = False
    reason: str = ""

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> VerificationAUC:
        return cls(**{**content, "interval": tuple(content["interval"])})

    def describe(self) -> str:
        return (
            f"same vs different patient: AUC {self.value:.3f} CI {_interval(self.interval)} over {self.n_images} held-out images "
            f"of {self.n_patients} patients with repeat images"
        )


@dataclass(frozen=True)
class Threshold:
    """The privacy threshold tau with its provenance.

    Parameters
    ----------
    value
        tau: images at a distance ``< value`` from every training image are not released.
    rule
        The rule asked for (``max``, ``holdout`` or ``same``).
    applied_rule
        The rule that decided: ``holdout`` when ``max`` was asked but tau_same is absent (no
        same-patient pairs) or not meaningful (see ``verification``).
    holdout
        The held-out candidate (low percentile of nearest-neighbour distances of unseen patients).
    same
        The same-patient candidate (high percentile of distances between images of one patient), or
        ``None`` when no patient had two images.
    interval
        Bootstrap confidence interval of ``value``.
    confidence
        Level of the intervals (0.95).
    n_bootstrap, seed
        Bootstrap replicates and their seed.
    utility_cost
        Share of the held-out real images that ``value`` would reject.
    near_duplicate_share
        Share of held-out images lying within ``near_duplicate_factor`` x the median held-out distance of
        a training image (near-duplicates across splits).
    near_duplicate_factor
        The factor, or ``None`` when near-duplicates were kept in the holdout percentile.
    holdout_value_all
        The holdout percentile over all held-out images, near-duplicates included.
    verification
        Same- vs different-patient AUC in this embedding (:class:`VerificationAUC`), or ``None`` when no
        held-out patient had two images; it decides whether tau_same counts.
    same_applied
        Whether tau_same entered ``value`` (``applied_rule`` is ``max`` or ``same``); derived when ``None``.
    utility_limit
        The largest utility cost calibration accepted without ``accept_utility_cost`` (``None``: not checked).
    utility_cost_accepted
        ``True`` when the utility cost exceeded ``utility_limit`` and was accepted explicitly.
    embedder_fingerprint, embedder_name, index_fingerprint
        What the threshold belongs to (the index fingerprint is a digest of its content,
        :attr:`~monai_pso.index.ReferenceIndex.fingerprint`).
    index_manifest_sha256
        The ``manifest_sha256`` of the saved index, when it was loaded from disk.
    query_views
        The extra query-side views distances are measured with (:class:`~monai_pso.embed.views.QueryViews`
        as a dict); the gate uses the same.
    sources
        Descriptions of the training, holdout and same-patient data.
    notes
        Plain-language remarks (fallbacks, near-duplicates, small samples).
    created, package_version
        Provenance.

    Examples
    --------
    >>> part = ThresholdPart("holdout", 2.0, 5.0, (1.5, 2.5), 40, 20)
    >>> t = Threshold(2.0, "max", "holdout", part, None, (1.5, 2.5), embedder_fingerprint="e", index_fingerprint="i")
    >>> t.releases(2.0), t.releases(1.999)
    (True, False)
    """

    value: float
    rule: str
    applied_rule: str
    holdout: ThresholdPart
    same: ThresholdPart | None
    interval: tuple[float, float]
    confidence: float = 0.95
    n_bootstrap: int = 0
    seed: int = 0
    utility_cost: float = float("nan")
    near_duplicate_share: float = 0.0
    near_duplicate_factor: float | None = None
    holdout_value_all: float = float("nan")
    verification: VerificationAUC | None = None
    same_applied: bool | None = None
    utility_limit: float | None = None
    utility_cost_accepted: bool = False
    embedder_fingerprint: str = ""
    embedder_name: str = ""
    index_fingerprint: str = ""
    index_manifest_sha256: str | None = None
    query_views: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    package_version: str = __version__

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise ConfigurationError(f"threshold value={self.value!r}: must be a positive finite number")
        if self.rule not in RULES or self.applied_rule not in RULES:
            raise ConfigurationError(f"rule={self.rule!r}, applied_rule={self.applied_rule!r}: each must be one of {', '.join(RULES)}")
        applied = self.applied_rule != "holdout"
        if self.same_applied is None:
            object.__setattr__(self, "same_applied", applied)
        elif bool(self.same_applied) != applied:
            raise ConfigurationError(f"same_applied={self.same_applied!r} contradicts applied_rule={self.applied_rule!r}")

    @property
    def views(self) -> QueryViews:
        """The query-side views this threshold was calibrated with."""
        return QueryViews.from_dict(self.query_views)

    def releases(self, distance: float) -> bool:
        """Whether an image at ``distance`` from the training set passes (``distance >= value``)."""
        return bool(distance >= self.value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (NaN written as ``None``)."""
        content = asdict(self)
        for key in ("utility_cost", "holdout_value_all"):
            if not math.isfinite(content[key]):
                content[key] = None
        return {"format": THRESHOLD_FORMAT, "decision": "released only when nn_distance >= value", **content}

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> Threshold:
        values = {k: v for k, v in content.items() if k not in ("format", "decision", INTEGRITY_KEY)}
        values["holdout"] = ThresholdPart.from_dict(values["holdout"])
        values["same"] = ThresholdPart.from_dict(values["same"]) if values.get("same") else None
        values["verification"] = VerificationAUC.from_dict(values["verification"]) if values.get("verification") else None
        values["interval"] = tuple(values["interval"])
        values["notes"] = tuple(values.get("notes", ()))
        for key in ("utility_cost", "holdout_value_all"):
            values[key] = float("nan") if values.get(key) is None else float(values[key])
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        """Write the threshold as JSON (atomically, with its integrity hash :data:`INTEGRITY_KEY`) and return the path."""
        write_json_atomically(path, seal(self.to_dict()))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, embedder: Any = None, index: Any = None) -> Threshold:
        """Read a threshold file; refuse it when it was made for another embedder or index.

        Parameters
        ----------
        path
            A JSON file written by :meth:`save`.
        embedder, index
            When given, their fingerprints must match the ones the threshold was calibrated with.

        Raises
        ------
        DataSourceError
            The file is missing or is not a monai-pso threshold.
        IntegrityError
            The file was edited after it was written (value, rule, query views...), or has no integrity hash.
        FingerprintMismatchError
            The threshold belongs to another embedder or index.
        """
        path = Path(path)
        remedy = "calibrate again (monai-pso calibrate, or monai-pso guard build for a guard folder)"
        threshold = read_sealed(path, THRESHOLD_FORMAT, "monai-pso threshold file", remedy, cls.from_dict)
        threshold.check_compatible(embedder=embedder, index=index, location=str(path))
        return threshold

    def check_compatible(self, embedder: Any = None, index: Any = None, location: str = "threshold") -> None:
        """Raise :class:`~monai_pso.errors.FingerprintMismatchError` unless ``embedder`` / ``index`` match."""
        check_fingerprints(self, embedder, index, location, "threshold", "calibrate again for this index")

    def describe(self) -> str:
        """A few lines for the terminal: tau, its parts with intervals, the utility cost."""
        lines = [f"tau = {self.value:.6g}  (rule {self.rule}, applied {self.applied_rule}; {self.confidence:.0%} CI {_interval(self.interval)})"]
        lines.append(f"  embedder {self.embedder_name} {self.embedder_fingerprint[:12]}, query views {self.views}")
        for part in (self.holdout, self.same):
            if part is None:
                lines.append("  same-patient: absent (no patient with two or more images)")
                continue
            lines.append(
                f"  {part.name}: {part.value:.6g} = {part.percentile:g}th percentile over {part.n_images} images of "
                f"{part.n_patients} patients, CI {_interval(part.interval)}"
            )
        if self.verification is not None:
            lines.append(f"  {self.verification.describe()}")
        if self.same is not None:
            verdict = self.verification.reason if self.verification is not None and self.verification.reason else ""
            lines.append(f"  tau_same {'applied' if self.same_applied else 'NOT applied'}" + (f": {verdict}" if verdict else ""))
        lines.append(f"  held-out images within {self.near_duplicate_factor or 0:g} x median of a training image: {self.near_duplicate_share:.1%}")
        limit = "" if self.utility_limit is None else f" (limit {self.utility_limit:.0%}" + ("; ACCEPTED above the limit)" if self.utility_cost_accepted else ")")
        lines.append(f"  utility cost: {self.utility_cost:.1%} of held-out real images would be rejected{limit}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _interval(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:.6g}, {interval[1]:.6g}]"
