"""The one-line conclusion of an audit, phrased so that it never claims more than the tests show.

A test *detects leakage* when its interval (or p-value) excludes "no leakage" at the audit's
confidence level: DCR test (released images nearer the training set than holdout images) with
``p < 1 - confidence``, singling-out risk with a lower
bound above 0, membership AUC with a lower bound above 0.5, and a copy rate at the smallest level
whose interval lies above the holdout images' (disjoint Wilson intervals). Otherwise the conclusion
reports the upper bounds: what the data rule out, never that the release is "anonymous".

**Too small to measure.** A null result only bounds something when its intervals are narrow. The audit
says it *cannot tell* when no test detects leakage and an interval spans more than half of its
``[0, 1]`` range (:data:`MEASURABLE_WIDTH`): the singling-out risk interval (with no leakage found it
starts at 0, so this is an upper bound above 0.5) or the DCR AUC interval. Interval widths shrink as
``1 / sqrt(n)`` in the number ``n`` of released images (the singling-out rates are shares of released
images; the DCR AUC's width also depends on the holdout patients, so with few of them more released
images alone may not suffice), so the release would need about ``n * (width / 0.5) ** 2`` images for
the widest interval to fall to 0.5: :func:`measurability`.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai_pso.audit.runner import AuditResult


#: Widest interval (as a share of the ``[0, 1]`` range) that still bounds something.
MEASURABLE_WIDTH = 0.5


def _ci(bounds: tuple[float, float] | list[float]) -> str:
    return f"{bounds[0]:.2f}-{bounds[1]:.2f}"


@dataclass(frozen=True)
class Measurability:
    """Whether a release is large enough for its null results to bound anything.

    Attributes
    ----------
    too_small
        Some headline interval is wider than :data:`MEASURABLE_WIDTH`.
    released_images
        The release's size.
    widths
        Width of each headline interval (``singling_out_risk``, ``dcr_auc``).
    images_needed
        About how many released images would bring the widest interval to :data:`MEASURABLE_WIDTH`
        (``n * (width / 0.5) ** 2``, at least ``n``).

    Examples
    --------
    >>> m = Measurability.from_widths(5, {"singling_out_risk": 1.0, "dcr_auc": 0.7})
    >>> m.too_small, m.images_needed
    (True, 20)
    >>> Measurability.from_widths(400, {"singling_out_risk": 0.1, "dcr_auc": 0.12}).too_small
    False
    """

    too_small: bool
    released_images: int
    widths: dict[str, float]
    images_needed: int

    @classmethod
    def from_widths(cls, released_images: int, widths: dict[str, float]) -> Measurability:
        widest = max(widths.values())
        needed = max(released_images, ceil(released_images * (widest / MEASURABLE_WIDTH) ** 2 - 1e-9))
        return cls(widest > MEASURABLE_WIDTH, released_images, dict(widths), needed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "too_small": self.too_small,
            "rule": f"an interval of the singling-out risk or of the DCR AUC wider than {MEASURABLE_WIDTH}; widths scale as 1/sqrt(released images)",
            "released_images": self.released_images,
            "interval_widths": dict(self.widths),
            "images_needed": self.images_needed,
        }


def measurability(result: AuditResult) -> Measurability:
    """The widths of the singling-out risk and DCR AUC intervals, and the release size they call for."""
    widths = {"singling_out_risk": result.singling_out.risk.ci[1] - result.singling_out.risk.ci[0], "dcr_auc": result.dcr.auc_ci[1] - result.dcr.auc_ci[0]}
    return Measurability.from_widths(result.counts["released_images"], widths)


def leakage_findings(result: AuditResult) -> list[str]:
    """The tests that detect leakage, each as a short phrase with its figures (empty when none)."""
    level = f"{100 * result.settings.confidence:g}%"
    findings = []
    if result.dcr.p_value < 1.0 - result.settings.confidence:
        dcr = result.dcr
        findings.append(
            f"released images nearer the training set than holdout images (DCR AUC {dcr.auc:.2f}, {level} CI {_ci(dcr.auc_ci)}, "
            f"p = {dcr.p_value:.2g}; {dcr.close.value:.0%} closer than the holdout's {100 * dcr.quantile:g}th percentile, "
            f"expected {dcr.null_share:.0%})"
        )
    if result.singling_out.risk.ci[0] > 0.0:
        findings.append(f"singling-out risk {result.singling_out.risk.value:.2f} ({level} CI {_ci(result.singling_out.risk.ci)})")
    if result.membership.ci[0] > 0.5:
        findings.append(f"membership AUC {result.membership.auc:.2f} ({level} CI {_ci(result.membership.ci)})")
    closest = result.copy_rates[0] if result.copy_rates else None
    if closest is not None and closest.released.ci[0] > closest.holdout.ci[1]:
        findings.append(
            f"{closest.released.value:.0%} of released images within {closest.level.distance:.3g} of a training image "
            f"(holdout images: {closest.holdout.value:.0%})"
        )
    return findings


def conclude(result: AuditResult) -> str:
    """One line: the leakage found, or the bounds on what was not found (or that the release is too small
    to tell), then the fidelity figures beside the real baseline's when they were measured.

    Examples
    --------
    >>> conclude(result)  # doctest: +SKIP
    'no measurable excess singling-out risk (upper 95% bound 0.03), ...'
    """
    fidelity = fidelity_summary(result)
    return privacy_conclusion(result) + (f"; {fidelity}" if fidelity else "")


def fidelity_summary(result: AuditResult) -> str:
    """Precision and coverage of the release beside the real baseline's, flagging a precision below half of it."""
    if result.fidelity is None:
        return ""
    release, baseline = result.fidelity.release, result.fidelity.baseline
    text = (
        f"fidelity embedding: precision {release.precision.value:.2f}, coverage {release.coverage.value:.2f}, "
        f"authenticity {release.authenticity.value:.2f} (held-out real images: {baseline.precision.value:.2f}, "
        f"{baseline.coverage.value:.2f}, {baseline.authenticity.value:.2f})"
    )
    if release.precision.ci[1] < 0.5 * baseline.precision.value:
        text += ": the released images do not look like real images in this embedding"
    return text


def privacy_conclusion(result: AuditResult) -> str:
    """The privacy part of :func:`conclude`."""
    level = f"{100 * result.settings.confidence:g}%"
    embedding = f"in the {result.embedder} embedding"
    findings = leakage_findings(result)
    if findings:
        return f"significant leakage detected {embedding}: " + "; ".join(findings)
    scale = measurability(result)
    if scale.too_small:
        return (
            f"too small to measure: {scale.released_images} released images give a singling-out risk interval "
            f"{_ci(result.singling_out.risk.ci)} and a DCR AUC interval {_ci(result.dcr.auc_ci)} ({level}), wider than "
            f"{MEASURABLE_WIDTH} of their range, so no leakage was detected and none is ruled out {embedding}; about "
            f"{scale.images_needed} released images would be needed to bound the risk (interval widths scale as 1/sqrt(n))"
        )
    return (
        f"no measurable excess singling-out risk (upper {level} bound {result.singling_out.risk.ci[1]:.2f}), "
        f"no significant DCR excess (AUC {result.dcr.auc:.2f}, p = {result.dcr.p_value:.2f}) and "
        f"no significant membership signal (AUC {result.membership.auc:.2f}, {level} CI {_ci(result.membership.ci)}) "
        f"{embedding}; this bounds the measured risk, it does not prove anonymity"
    )
