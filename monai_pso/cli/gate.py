"""``monai-pso gate``: release the candidate images that lie at least tau from every training image."""

from __future__ import annotations

from pathlib import Path

import click

from monai_pso.cli.options import IMAGE_FORMATS, threads_option


@click.command()
@click.argument("candidates")
@click.option("--guard", "guard", type=click.Path(path_type=Path), default=None, help="Guard folder (monai-pso guard build).")
@click.option("--index", "indexes", multiple=True, type=click.Path(path_type=Path), help="Advanced, instead of --guard: reference index folder; repeat for several checks (all must pass).")
@click.option("--threshold", "thresholds", multiple=True, type=click.Path(path_type=Path), help="Advanced: threshold JSON of each --index, in the same order.")
@click.option("--embedder-dir", "embedder_dirs", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Advanced: saved embedder of each --index (reid / latent), in the same order.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Release folder to create (must not exist or be empty).")
@click.option("--format", "fmt", type=click.Choice(IMAGE_FORMATS), default="png", show_default=True, help="File format of released images.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images checked per call.")
@click.option("--plausibility/--no-plausibility", "plausibility", default=None,
    help="Refuse candidates farther from the real data than held-out real images are (implausible)  [default: on when the guard folder has a plausibility check].")
@threads_option
def gate(
    candidates: str, guard: Path | None, indexes: tuple[Path, ...], thresholds: tuple[Path, ...], embedder_dirs: tuple[Path, ...], out: Path, fmt: str, batch_size: int,
    plausibility: bool | None, threads: int,
) -> None:
    """Gate every image of CANDIDATES (any SOURCE, all splits) and copy the passing ones into OUT.

    OUT receives images/, audit.csv (one row per candidate), summary.json, distances.png and
    manifest.json, all at once at the end, after the release is appended to the ledger of the guard's
    primary index; on any error nothing is released. The salt of the patient hashes is kept in
    OUT.salt beside the release. Under torchrun each rank gates its share and one release is written.
    """
    from monai_pso.guard import load_checker
    from monai_pso.release import gate_source
    from monai_pso.release.ranks import process_group_from_env, rank_and_world
    from monai_pso.threads import cpu_threads

    with cpu_threads(threads), process_group_from_env():
        checker = load_checker(guard, index=indexes or None, threshold=thresholds or None, embedder_dir=embedder_dirs or None, plausibility=plausibility)
        report = gate_source(candidates, checker, out, fmt=fmt, batch_size=batch_size)
        if rank_and_world()[0] != 0:
            return
    counts = report.counts
    click.echo(
        f"released {counts['released']} of {counts['requested']} candidates ({report.summary['released_share']:.1%}); {counts['too_close']} too close to a training image, "
        + (f"{counts['implausible']} implausible" if checker.plausibility is not None else "plausibility not checked")
    )
    click.echo(f"release: {report.release_dir}  (audit.csv, summary.json, manifest.json)")
    if report.ledger_seq is not None:
        click.echo(f"ledger:  entry {report.ledger_seq} in {checker.ledger_dir / 'ledger.jsonl'}")
