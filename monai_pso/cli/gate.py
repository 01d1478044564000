"""``monai-pso gate``: release the candidate images that lie at least tau from every training image."""

from __future__ import annotations

from pathlib import Path

import click

from monai_pso.guard.storage import FORMATS


@click.command()
@click.argument("candidates")
@click.option("--index", "indexes", required=True, multiple=True, type=click.Path(path_type=Path), help="Reference index folder; repeat for several checks (all must pass).")
@click.option("--threshold", "thresholds", required=True, multiple=True, type=click.Path(path_type=Path), help="Threshold JSON of each --index, in the same order.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Release folder to create (must not exist or be empty).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="png", show_default=True, help="File format of released images.")
@click.option("--embedder-dir", "embedder_dirs", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Saved embedder of each --index (reid / latent), in the same order.")
@click.option("--salt-file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Private salt of the patient hashes [default: OUT.salt beside the release, created if absent].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images checked per call.")
def gate(candidates: str, indexes: tuple[Path, ...], thresholds: tuple[Path, ...], out: Path, fmt: str, embedder_dirs: tuple[Path, ...], salt_file: Path | None, batch_size: int) -> None:
    """Gate every image of CANDIDATES (any SOURCE, all splits) and copy the passing ones into OUT.

    OUT receives images/, audit.csv, summary.json, distances.png and manifest.json, all at once at
    the end; on any error nothing is released. The release is appended to the ledger of the first
    --index (the primary check), which `monai-pso audit --cumulative` reads.
    """
    from monai_pso.calibrate import resolve_embedder
    from monai_pso.engines.release import check_ledger, record_release
    from monai_pso.errors import MonaiPsoError
    from monai_pso.guard.checker import GuardCheck, PrivacyChecker
    from monai_pso.guard.hashing import PatientHasher
    from monai_pso.guard.release import gate_source
    from monai_pso.index import ReferenceIndex

    if len(thresholds) != len(indexes) or (embedder_dirs and len(embedder_dirs) != len(indexes)):
        raise MonaiPsoError(f"give one --threshold (and --embedder-dir, if any) per --index: {len(indexes)} indexes, {len(thresholds)} thresholds, {len(embedder_dirs)} embedder dirs")
    checks = []
    for i, (index_dir, threshold) in enumerate(zip(indexes, thresholds)):
        reference = ReferenceIndex.load(index_dir)
        embedder = resolve_embedder(reference, embedder_dir=embedder_dirs[i] if embedder_dirs else None)
        checks.append(GuardCheck.create(reference, threshold, embedder))
    check_ledger(indexes[0])  # before gating: a broken ledger stops the release, not its record
    out = out.expanduser().resolve()
    salt_file = salt_file or out.with_name(out.name + ".salt")
    new_salt = not salt_file.exists()
    try:
        report = gate_source(candidates, PrivacyChecker(checks, PatientHasher.from_file(salt_file)), out, fmt=fmt, batch_size=batch_size)
        entry = record_release(indexes[0], report.release_dir, "gate", checks[0].index_fingerprint)  # removes the release if it fails
    except BaseException:
        if new_salt:
            salt_file.unlink(missing_ok=True)  # nothing was released: leave nothing behind
        raise
    counts = report.counts
    click.echo(f"released {counts['released']} of {counts['candidates']} candidates ({report.summary['released_share']:.1%}); {counts['rejected']} too close to a training image")
    click.echo(f"release: {report.release_dir}  (audit.csv, summary.json, manifest.json)")
    click.echo(f"ledger:  entry {entry.seq} in {Path(indexes[0]) / 'ledger.jsonl'}")
