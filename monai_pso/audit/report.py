"""Write an audit to ``REPORT_DIR``: ``report.json``, ``report.md`` and a self-contained ``report.html``.

``report.json`` holds every figure and interval (:meth:`AuditResult.to_dict` plus the context: release
folders, index, ledger entries). ``report.md`` has the same tables in Markdown. ``report.html`` adds the
figures as base64 PNG ``data:`` URIs, so it needs no other file and no network. The three files are
written into a temporary folder beside ``REPORT_DIR`` and the folder is renamed into place (a previous
report there is replaced), so a reader never sees a half-written report.

Examples
--------
>>> write_report(run_audit(cohorts, [embedder]), "runs/audit", {"release": ["runs/release"]})  # doctest: +SKIP
PosixPath('runs/audit')
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_pso import __version__
from monai_pso.audit import figures
from monai_pso.audit.fidelity import SCORES as FIDELITY_SCORES
from monai_pso.audit.runner import AuditResult
from monai_pso.errors import DataSourceError
from monai_pso.io import staged_folder

REPORT_FORMAT = "monai-pso-audit/2"  # 2: DCR against the full training set (dcr_auc, dcr_close_share replace dcr_share)


def _ci(bounds: Sequence[float]) -> str:
    return f"{bounds[0]:.3f} - {bounds[1]:.3f}"


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(test, estimate, interval, p-value, what "no leakage" looks like) for the headline table."""
    level = f"{100 * report['confidence']:g}%"
    so, dcr, identity = report["singling_out"], report["dcr"], report.get("identity_singling_out")
    return [
        ("DCR: released nearer training than holdout (AUC)", f"{report['dcr_auc']:.3f}", f"{level}: {_ci(report['dcr_auc_ci'])}", f"{report['dcr_p_value']:.3g}", "0.5"),
        (
            f"- released closer than the holdout's {100 * dcr['quantile']:g}th-percentile DCR",
            f"{report['dcr_close_share']:.3f}",
            f"{level}: {_ci(report['dcr_close_share_ci'])}",
            "",
            f"{dcr['null_share']:.3f}",
        ),
        ("Singling-out risk", f"{report['singling_out_risk']:.3f}", f"{level}: {_ci(report['singling_out_risk_ci'])}", "", "0"),
        ("- attack rate (training patients)", f"{so['attack_rate']['value']:.3f}", f"{level}: {_ci(so['attack_rate']['ci'])}", "", "= control rate"),
        ("- control rate (control patients)", f"{so['control_rate']['value']:.3f}", f"{level}: {_ci(so['control_rate']['ci'])}", "", ""),
        *([("Singling-out risk, guard's identity embedding", f"{identity['risk']:.3f}", f"{level}: {_ci(identity['ci'])}", "", "0")] if identity else []),
        ("Membership AUC", f"{report['membership_auc']:.3f}", f"{level}: {_ci(report['membership_auc_ci'])}", "", "0.5"),
    ]


def copy_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """(embedder, level, distance, released share [CI], holdout share [CI], training patients copied)."""
    return [
        (
            row["embedder"],
            row["level"],
            f"{row['distance']:.4g}",
            f"{row['released_share']:.3f} [{_ci(row['released_ci'])}]",
            f"{row['holdout_share']:.3f} [{_ci(row['holdout_ci'])}]",
            str(row["training_patients_copied"]),
        )
        for row in report["copy_rate"]
    ]


def fidelity_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """(row, precision, recall, density, coverage, authenticity, FID, KID), each score with its interval:
    the release against held-out real images, then the real-data baseline (held-out against training)."""
    if report.get("fidelity_baseline") is None:
        return []
    release = dict(report["fidelity"], fid=report["fid"])
    release.update({key: report[key] for name in (*FIDELITY_SCORES, "kid") for key in (name, f"{name}_ci")})
    baseline = report["fidelity_baseline"]
    labels = (
        f"release: {release['synthetic_images']} released vs {release['reference_images']} held-out",
        f"real baseline: {baseline['synthetic_images']} held-out vs {baseline['reference_images']} training",
    )
    rows = []
    for label, row in zip(labels, (release, baseline)):
        scores = [f"{row[name]:.3f} [{_ci(row[f'{name}_ci'])}]" for name in FIDELITY_SCORES]
        rows.append((label, *scores, f"{row['fid']:.4g}", f"{row['kid']:.3g} [{row['kid_ci'][0]:.3g}, {row['kid_ci'][1]:.3g}]"))
    return rows


def fidelity_note(report: Mapping[str, Any]) -> str:
    """How to read the fidelity table: its feature space, ``k`` and the baseline."""
    space = report["fidelity_feature_space"]
    return (
        f"Feature space: {space['name']} embedding (fingerprint {space['fingerprint'][:12]}), k = {report['fidelity']['nearest_k']}; "
        f"{100 * report['confidence']:g}% percentile-bootstrap intervals. Read each release figure against the real baseline row, "
        "what held-out real images score: precision and density far below it mean images unlike real ones, recall and coverage "
        "below it a release that misses real variety (both also grow with the release's size), authenticity below it copies of "
        "training images; FID and KID (lower is closer) are biased at small sizes, compare them only at similar sizes."
    )


SUMMARY_HEADER = ("test", "estimate", "interval", "p-value", "no leakage")
FIDELITY_HEADER = ("images", "precision", "recall", "density", "coverage", "authenticity", "FID", "KID")
COPY_HEADER = ("embedder", "level", "distance", "released within (share, CI)", "holdout within (share, CI)", "training patients copied")


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _yes_no(flag: bool | None) -> str:
    return {True: "yes", False: "NO, it is the guard's own", None: "unknown"}[flag]


def _facts(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["counts"].items())
    fingerprints = ", ".join(f"{k}: {(v or 'unknown')[:16]}" for k, v in report["fingerprints"].items())
    return [
        ("Audit embedding", f"{report['embedder']['name']} (independent of the guard's: {_yes_no(report['independent_of_guard'])})"),
        ("Release", ", ".join(report.get("release", [])) or "in memory"),
        ("Counts", counts),
        ("Fingerprints", fingerprints),
        ("Threshold tau", "unknown" if report["threshold"] is None else f"{report['threshold']:.6g}"),
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: conclusion, tables, facts and caveats (the figures are in ``report.html``)."""
    parts = [
        "# Privacy audit of a synthetic-image release",
        f"**Conclusion:** {report['conclusion']}",
        _markdown_table(SUMMARY_HEADER, summary_rows(report)),
        "## Copy rates",
        _markdown_table(COPY_HEADER, copy_rows(report)),
    ]
    if rows := fidelity_rows(report):
        parts += ["## Fidelity and diversity", fidelity_note(report), _markdown_table(FIDELITY_HEADER, rows)]
    parts += [
        "## Facts",
        "\n".join(f"- **{k}:** {v}" for k, v in _facts(report)),
    ]
    if report["warnings"]:
        parts += ["## Caveats", "\n".join(f"- {w}" for w in report["warnings"])]
    parts.append(f"_monai-pso {report['monai_pso_version']}, {report['created']}. Figures: report.html; every number: report.json._")
    return "\n\n".join(parts) + "\n"


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;font-size:14px}"
    "th{background:#eee}.conclusion{font-size:1.1em;padding:.8em;border-left:6px solid #444;background:#f6f6f6}"
    "figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:13px;max-width:640px}"
)


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def render_html(report: Mapping[str, Any], result: AuditResult) -> str:
    """``report.html``: everything in ``report.md`` plus the figures, with no external asset."""
    so = result.singling_out
    images = [
        _img(
            figures.distance_histogram(result.released_to_training, result.holdout_to_training),
            "DCR histogram",
            "Distance to the nearest image of the full training set, from each released image and from each holdout image "
            "(one per holdout patient). Without leakage the two histograms overlap; copies pile up at 0.",
        ),
        _img(
            figures.singling_out_figure((so.attack.value, so.attack.ci), (so.control.value, so.control.ci), so.risk.value, so.risk.ci),
            "singling-out rates",
            "Share of released images whose ball isolates exactly one patient, among training and among control patients (equal numbers).",
        ),
        _img(
            figures.roc_figure(result.membership.fpr, result.membership.tpr, result.membership.auc, result.membership.ci),
            "membership ROC",
            "Training vs holdout patients, scored by their distance to the nearest released image. The diagonal is no signal.",
        ),
    ]
    if result.nearest_pairs:
        images.append(
            _img(
                figures.nearest_pairs_figure(result.nearest_pairs),
                "nearest pairs",
                "The released images closest to a training image in the audit embedding, each beside that training image.",
            )
        )
    fidelity_section = ""
    if result.fidelity is not None:
        release, baseline = result.fidelity.release, result.fidelity.baseline
        pick = lambda scores: [(getattr(scores, n).value, getattr(scores, n).ci) for n in FIDELITY_SCORES]  # noqa: E731
        plots = [
            _img(
                figures.fidelity_bars(FIDELITY_SCORES, pick(release), pick(baseline)),
                "fidelity scores",
                "Precision, recall, density, coverage (Naeem et al. 2020) and authenticity (Alaa et al. 2022) of the release, "
                "beside what held-out real images score against training. A release that looks real scores near the baseline.",
            ),
            _img(
                figures.fidelity_distance_histogram(release.nearest_reference, baseline.nearest_reference, release.reference_radius),
                "distance to real images",
                "Distance from each released image to the nearest held-out real image, and from each held-out image to the nearest "
                "training image, in the fidelity embedding. Images unlike real data lie far to the right of the dashed radius.",
            ),
        ]
        fidelity_section = (
            f"<h2>Fidelity and diversity</h2><p>{html.escape(fidelity_note(report))}</p>"
            f"{_html_table(FIDELITY_HEADER, fidelity_rows(report))}{''.join(plots)}"
        )
    facts = "".join(f"<li><b>{html.escape(k)}:</b> {html.escape(v)}</li>" for k, v in _facts(report))
    caveats = "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>monai-pso audit</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Privacy audit of a synthetic-image release</h1>"
        f"<p class='conclusion'>{html.escape(report['conclusion'])}</p>"
        f"{_html_table(SUMMARY_HEADER, summary_rows(report))}"
        f"<h2>Figures</h2>{''.join(images)}"
        f"<h2>Copy rates</h2>{_html_table(COPY_HEADER, copy_rows(report))}"
        f"{fidelity_section}"
        f"<h2>Facts</h2><ul>{facts}</ul>"
        + (f"<h2>Caveats</h2><ul>{caveats}</ul>" if caveats else "")
        + f"<p><small>monai-pso {html.escape(report['monai_pso_version'])}, {html.escape(report['created'])}</small></p>"
        "</body></html>\n"
    )


def build_report(result: AuditResult, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``report.json`` document: the result's figures, ``context`` (release, index, ledger), provenance."""
    report = {"format": REPORT_FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "monai_pso_version": __version__}
    report.update(result.to_dict())
    report.update(context or {})
    return report


def write_report(result: AuditResult, out_dir: str | Path, context: Mapping[str, Any] | None = None) -> Path:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir``, all at once."""
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise DataSourceError(out_dir, "exists and is not a folder")
    report = build_report(result, context)
    with staged_folder(out_dir) as staged:
        (staged / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (staged / "report.md").write_text(render_markdown(report), encoding="utf-8")
        (staged / "report.html").write_text(render_html(report, result), encoding="utf-8")
        staged.chmod(0o755)
    return out_dir
