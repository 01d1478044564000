"""The calibrated threshold tau as a saved artefact: value, how it was made, and for which embedder.

A :class:`Threshold` is written by :func:`monai_pso.calibrate.calibrate_threshold` and read by the
gate. The JSON file records everything needed to judge it (rule, percentiles, counts, bootstrap
intervals, the utility cost, notes) and the fingerprints of the embedder and the reference index it
was calibrated against; :meth:`Threshold.load` refuses to pair it with any other.

Decision convention everywhere: an image whose distance to the training set is ``< value`` is too
close and is not released; ``>= value`` passes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_pso import __version__
from monai_pso.embed.views import QueryViews
from monai_pso.errors import ConfigurationError, DataSourceError, FingerprintMismatchError
from monai_pso.io import read_json, write_json_atomically

#: Written into every threshold file; :meth:`Threshold.load` refuses other formats.
THRESHOLD_FORMAT = "monai-pso/threshold/1"

#: Rules that combine the two candidate thresholds.
RULES = ("max", "holdout", "same")


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
class Threshold:
    """The privacy threshold tau with its provenance.

    Parameters
    ----------
    value
        tau: images at a distance ``< value`` from every training image are not released.
    rule
        The rule asked for (``max``, ``holdout`` or ``same``).
    applied_rule
        The rule that decided (``holdout`` when ``max`` was asked but no same-patient pairs existed).
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
        values = {k: v for k, v in content.items() if k not in ("format", "decision")}
        values["holdout"] = ThresholdPart.from_dict(values["holdout"])
        values["same"] = ThresholdPart.from_dict(values["same"]) if values.get("same") else None
        values["interval"] = tuple(values["interval"])
        values["notes"] = tuple(values.get("notes", ()))
        for key in ("utility_cost", "holdout_value_all"):
            values[key] = float("nan") if values.get(key) is None else float(values[key])
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        """Write the threshold as JSON (atomically) and return the path."""
        write_json_atomically(path, self.to_dict())
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
        FingerprintMismatchError
            The threshold belongs to another embedder or index.
        """
        path = Path(path)
        content = read_json(path, what="threshold file")
        if not isinstance(content, dict) or content.get("format") != THRESHOLD_FORMAT:
            raise DataSourceError(path, f"not a monai-pso threshold file (expected format {THRESHOLD_FORMAT!r})")
        try:
            threshold = cls.from_dict(content)
        except (KeyError, TypeError, ValueError) as error:
            raise DataSourceError(path, f"malformed threshold file ({error})") from None
        threshold.check_compatible(embedder=embedder, index=index, location=str(path))
        return threshold

    def check_compatible(self, embedder: Any = None, index: Any = None, location: str = "threshold") -> None:
        """Raise :class:`~monai_pso.errors.FingerprintMismatchError` unless ``embedder`` / ``index`` match."""
        if embedder is not None and embedder.fingerprint != self.embedder_fingerprint:
            raise FingerprintMismatchError(
                f"{location}: threshold was calibrated for embedder {self.embedder_fingerprint[:12]} "
                f"({self.embedder_name or 'unknown'}), not for {embedder.fingerprint[:12]} ({getattr(embedder, 'name', '?')})"
            )
        if index is not None and index.fingerprint != self.index_fingerprint:
            raise FingerprintMismatchError(
                f"{location}: threshold was calibrated against index {self.index_fingerprint[:12]}, "
                f"not {index.fingerprint[:12]}; calibrate again for this index"
            )

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
        lines.append(f"  held-out images within {self.near_duplicate_factor or 0:g} x median of a training image: {self.near_duplicate_share:.1%}")
        lines.append(f"  utility cost: {self.utility_cost:.1%} of held-out real images would be rejected")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _interval(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:.6g}, {interval[1]:.6g}]"
