"""The plausibility radius as a saved artefact: value, how it was calibrated, and for which embedder and index.

A :class:`PlausibilityRadius` is written by :func:`monai_pso.calibrate.plausibility.calibrate_plausibility`
and read by the guard's plausibility check. An image whose distance to its ``k``-th nearest training
image, in a fidelity embedding (not the copy checks' embedding), is ``> value`` lies farther from the
real data than nearly all held-out real images do and is refused as ``implausible``; ``<= value`` passes.

Like a :class:`~monai_pso.calibrate.threshold.Threshold`, the JSON file records everything needed to
judge it (the quantile, the share of held-out real images it refuses, bootstrap intervals, counts,
notes), the fingerprints of its embedder and index (:meth:`PlausibilityRadius.load` refuses any
other), and an integrity hash (``content_sha256``, :func:`~monai_pso.calibrate.threshold.seal`): an
edited radius is refused with :class:`~monai_pso.errors.IntegrityError`.

Examples
--------
>>> radius = PlausibilityRadius(2.0, 5, 0.05, 49, (1.8, 2.3), 0.02, (0.0, 0.06), 50, 50, embedder_fingerprint="e", index_fingerprint="i")
>>> radius.plausible(2.0), radius.plausible(2.001)
(True, False)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_pso import __version__
from monai_pso.calibrate.threshold import INTEGRITY_KEY, check_fingerprints, read_sealed, seal
from monai_pso.errors import ConfigurationError
from monai_pso.io import write_json_atomically

#: Written into every radius file; :meth:`PlausibilityRadius.load` refuses other formats.
RADIUS_FORMAT = "monai-pso/plausibility-radius/1"


@dataclass(frozen=True)
class PlausibilityRadius:
    """The plausibility radius with its provenance (see the module docstring).

    Parameters
    ----------
    value
        The radius: an image whose ``k``-th nearest training image lies farther than ``value`` is implausible.
    k
        Which nearest training image (distinct images) the distance is taken to.
    max_refused
        The largest share of held-out real images the radius was asked to refuse.
    rank
        Which held-out distance, smallest first, is the radius (the split-conformal rank
        ``ceil((n + 1) * (1 - max_refused))``, :func:`~monai_pso.calibrate.plausibility.conformal_radius`).
    interval
        Patient-bootstrap confidence interval of ``value``.
    refused_share, refused_share_interval
        Share of the held-out real images lying beyond ``value`` (refused), and its patient-bootstrap interval.
    n_images, n_patients
        Held-out images and patients the radius was calibrated on.
    confidence, n_bootstrap, seed
        Level of the intervals, bootstrap replicates and their seed.
    embedder_fingerprint, embedder_name, index_fingerprint
        The fidelity embedder and the reference index the radius belongs to.
    sources
        Descriptions of the training and held-out data.
    notes
        Plain-language remarks (small samples).
    created, package_version
        Provenance.
    """

    value: float
    k: int
    max_refused: float
    rank: int
    interval: tuple[float, float]
    refused_share: float
    refused_share_interval: tuple[float, float]
    n_images: int
    n_patients: int
    confidence: float = 0.95
    n_bootstrap: int = 0
    seed: int = 0
    embedder_fingerprint: str = ""
    embedder_name: str = ""
    index_fingerprint: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    package_version: str = __version__

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise ConfigurationError(f"plausibility radius value={self.value!r}: must be a positive finite number")
        if self.k < 1 or not 0.0 <= self.max_refused < 1.0:
            raise ConfigurationError(f"plausibility radius k={self.k}, max_refused={self.max_refused}: need k >= 1 and 0 <= max_refused < 1")

    def plausible(self, distance: float) -> bool:
        """Whether an image at ``distance`` from its ``k``-th nearest training image passes (``distance <= value``)."""
        return bool(distance <= self.value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content."""
        return {"format": RADIUS_FORMAT, "decision": "implausible when the k-th nearest training distance > value", **asdict(self)}

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> PlausibilityRadius:
        values = {key: value for key, value in content.items() if key not in ("format", "decision", INTEGRITY_KEY)}
        for key in ("interval", "refused_share_interval", "notes"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        """Write the radius as JSON (atomically, with its integrity hash) and return the path."""
        write_json_atomically(path, seal(self.to_dict()))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, embedder: Any = None, index: Any = None) -> PlausibilityRadius:
        """Read a radius file; refuse an edited one, or one made for another embedder or index.

        Raises
        ------
        DataSourceError
            The file is missing or is not a plausibility radius.
        IntegrityError
            The file was edited after it was written, or has no integrity hash.
        FingerprintMismatchError
            The radius belongs to another embedder or index.
        """
        path = Path(path)
        radius = read_sealed(path, RADIUS_FORMAT, "plausibility radius file", "build the guard again (monai-pso guard build SOURCE --out GUARD_DIR)", cls.from_dict)
        radius.check_compatible(embedder=embedder, index=index, location=str(path))
        return radius

    def check_compatible(self, embedder: Any = None, index: Any = None, location: str = "plausibility radius") -> None:
        """Raise :class:`~monai_pso.errors.FingerprintMismatchError` unless ``embedder`` / ``index`` are the radius's own."""
        check_fingerprints(self, embedder, index, location, "radius", "build the guard again")

    def describe(self) -> str:
        """One line for the terminal: the radius, its interval and the share of held-out real images it refuses."""
        low, high = self.interval
        share_low, share_high = self.refused_share_interval
        return (
            f"plausibility radius {self.value:.4g} ({self.confidence:.0%} CI [{low:.4g}, {high:.4g}]; distance to the k = {self.k} nearest training image, "
            f"{self.embedder_name} embedding): refuses {self.refused_share:.1%} of {self.n_images} held-out real images "
            f"(CI [{share_low:.1%}, {share_high:.1%}]; asked at most {self.max_refused:.0%})"
        )
