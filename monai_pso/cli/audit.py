"""``monai-pso audit``: privacy tests of a release (or of every release in an index's ledger) and a report."""

from __future__ import annotations

from pathlib import Path

import click

from monai_pso.cli.options import SPLITS, threads_option

#: Splits a holdout or control cohort can be taken from (``all``: every record of the SOURCE).
COHORT_SPLITS = (*SPLITS, "all")


@click.command("audit")
@click.argument("release_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Index the release was gated against.")
@click.option("--holdout", required=True, metavar="SOURCE", help="Patients never used in training (DCR and membership).")
@click.option("--holdout-split", type=click.Choice(COHORT_SPLITS), default="val", show_default=True, help="Split of --holdout to use.")
@click.option("--control", required=True, metavar="SOURCE", help="Other patients never used in training (singling-out control).")
@click.option("--control-split", type=click.Choice(COHORT_SPLITS), default="test", show_default=True, help="Split of --control to use.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Report folder (replaced atomically).")
@click.option("--embedder", "embedders", multiple=True, metavar="SPEC",
    help="Audit embedding: NAME[?key=value&...] or a saved embedder folder; repeat for more copy-rate rows. Default: pixel on another grid than the guard's.")
@click.option("--training", default=None, metavar="SOURCE", help="Training images, when the index's own SOURCE cannot be re-read.")
@click.option("--cumulative", is_flag=True, help="Audit the union of every release in the index's ledger (verified first).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True, help="Level of every interval.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of patient subsamples and bootstrap.")
@click.option("--bootstrap", type=click.IntRange(100), default=1000, show_default=True, help="Bootstrap resamples (membership AUC).")
@threads_option
def audit(release_dir, index_dir, holdout, holdout_split, control, control_split, out_dir, embedders, training, cumulative, confidence, seed, bootstrap, threads) -> None:
    """Measure the privacy risk left in RELEASE_DIR: DCR holdout test, singling out, membership, copy rates.

    Writes REPORT_DIR/report.json, report.md and report.html (self-contained). Works for releases of any
    generator; the training patients are those of the index.
    """
    if cumulative == (release_dir is not None):
        raise click.UsageError("give RELEASE_DIR, or --cumulative to audit every release in the ledger (not both)")
    from monai_pso.audit.pipeline import AuditRequest, audit_release
    from monai_pso.audit.runner import AuditSettings
    from monai_pso.threads import cpu_threads

    request = AuditRequest(
        index_dir=index_dir,
        holdout=holdout,
        control=control,
        out_dir=out_dir,
        release_dir=release_dir,
        cumulative=cumulative,
        holdout_split=holdout_split,
        control_split=control_split,
        embedders=embedders,
        training=training,
        settings=AuditSettings(confidence=confidence, seed=seed, n_resamples=bootstrap),
    )
    with cpu_threads(threads):
        result = audit_release(request)
    click.echo(result.conclusion)
    click.echo(f"report: {Path(out_dir) / 'report.html'}")
