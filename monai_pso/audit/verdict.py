"""The one-line conclusion of an audit, phrased so that it never claims more than the tests show.

A test *detects leakage* when its interval (or p-value) excludes "no leakage" at the audit's
confidence level: DCR test (released images nearer the training set than holdout images) with
``p < 1 - confidence``, singling-out risk with a lower
bound above 0, membership AUC with a lower bound above 0.5, and a copy rate at the smallest level
whose interval lies above the holdout images' (disjoint Wilson intervals). Otherwise the conclusion
reports the upper bounds: what the data rule out, never that the release is "anonymous".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monai_pso.audit.runner import AuditResult


def _ci(bounds: tuple[float, float] | list[float]) -> str:
    return f"{bounds[0]:.2f}-{bounds[1]:.2f}"


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
    """One line: the leakage found, or the bounds on what was not found.

    Examples
    --------
    >>> conclude(result)  # doctest: +SKIP
    'no measurable excess singling-out risk (upper 95% bound 0.03), ...'
    """
    level = f"{100 * result.settings.confidence:g}%"
    embedding = f"in the {result.embedder} embedding"
    findings = leakage_findings(result)
    if findings:
        return f"significant leakage detected {embedding}: " + "; ".join(findings)
    return (
        f"no measurable excess singling-out risk (upper {level} bound {result.singling_out.risk.ci[1]:.2f}), "
        f"no significant DCR excess (AUC {result.dcr.auc:.2f}, p = {result.dcr.p_value:.2f}) and "
        f"no significant membership signal (AUC {result.membership.auc:.2f}, {level} CI {_ci(result.membership.ci)}) "
        f"{embedding}; this bounds the measured risk, it does not prove anonymity"
    )
