"""``monai-pso calibrate``: the privacy threshold tau of a reference index, from held-out patients."""

from __future__ import annotations

from pathlib import Path

import click

from monai_pso.cli.options import THRESHOLD_RULES, threads_option


def _float_list(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers") from None


@click.command()
@click.argument("index_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--holdout", required=True, help="SOURCE with patients the index has never seen.")
@click.option("--split", default="val", show_default=True, help="Split(s) of the holdout to use, comma-separated ('all' for every split).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Threshold JSON to write.")
@click.option("--rule", type=click.Choice(THRESHOLD_RULES), default="max", show_default=True, help="max: stricter of holdout and same-patient; or one of them.")
@click.option("--holdout-percentile", default=5.0, show_default=True, type=click.FloatRange(0, 100), help="Low percentile of held-out nearest distances.")
@click.option("--same-percentile", default=95.0, show_default=True, type=click.FloatRange(0, 100), help="High percentile of same-patient distances.")
@click.option("--near-duplicate-factor", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True),
    help="Held-out images closer than this x the median are near-duplicates, left out of the percentile.")
@click.option("--keep-near-duplicates", is_flag=True, help="Keep near-duplicates in the holdout percentile.")
@click.option("--max-shift", default=None, type=click.IntRange(min=0), help="Query views: translations up to this many pixels [default: 1, tiles 2].")
@click.option("--rotations", default=None, help="Query views: turns in degrees, comma-separated [default: -5,-2.5,2.5,5 in 2D; none for tiles or 3D].")
@click.option("--training", default=None, help="SOURCE of the training images for same-patient pairs [default: the index's source].")
@click.option("--embedder-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="The saved embedder that built the index (reid / latent).")
@click.option("--min-same-auc", default=0.7, show_default=True, type=click.FloatRange(0, 1),
    help="tau_same counts only when the same- vs different-patient AUC reaches this (interval lower end > 0.5, >= 10 held-out patients with repeats).")
@click.option("--ignore-same-auc", is_flag=True, help="Apply tau_same whatever its AUC (not recommended).")
@click.option("--max-utility-cost", default=0.5, show_default=True, type=click.FloatRange(0, 1),
    help="A tau refusing more than this share of held-out real images is an error.")
@click.option("--accept-utility-cost", is_flag=True, help="Accept a utility cost above --max-utility-cost (recorded in the threshold).")
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(min=1), help="Patient bootstrap replicates.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@threads_option
def calibrate(
    index_dir: Path,
    holdout: str,
    split: str,
    out: Path,
    rule: str,
    holdout_percentile: float,
    same_percentile: float,
    near_duplicate_factor: float,
    keep_near_duplicates: bool,
    max_shift: int | None,
    rotations: str | None,
    training: str | None,
    embedder_dir: Path | None,
    min_same_auc: float,
    ignore_same_auc: bool,
    max_utility_cost: float,
    accept_utility_cost: bool,
    n_bootstrap: int,
    seed: int,
    threads: int,
) -> None:
    """Calibrate tau for the index in INDEX_DIR on held-out patients and write it to OUT.

    Prints tau, its two parts with bootstrap intervals, the same- vs different-patient AUC (whether
    tau_same is meaningful in this embedding, and so applied) and the share of held-out real images tau
    rejects (the utility cost). A utility cost above --max-utility-cost is an error unless
    --accept-utility-cost is given.
    """
    from monai_pso.calibrate import calibrate_threshold
    from monai_pso.embed.registry import resolve_embedder
    from monai_pso.embed.views import QueryViews, default_query_views
    from monai_pso.index import ReferenceIndex
    from monai_pso.threads import cpu_threads

    reference = ReferenceIndex.load(index_dir)
    embedder = resolve_embedder(reference, embedder_dir=embedder_dir)
    views = None
    if max_shift is not None or rotations is not None:
        default = default_query_views(embedder, len(reference.image_shape or (0, 0)))
        views = QueryViews(default.max_shift if max_shift is None else max_shift, default.rotations if rotations is None else _float_list(rotations))
    with cpu_threads(threads):
        threshold = calibrate_threshold(
            reference,
            embedder,
            holdout,
            split=None if split == "all" else split.split(","),
            holdout_percentile=holdout_percentile,
            same_percentile=same_percentile,
            rule=rule,
            n_bootstrap=n_bootstrap,
            seed=seed,
            training=training,
            near_duplicate_factor=None if keep_near_duplicates else near_duplicate_factor,
            views=views,
            min_same_auc=None if ignore_same_auc else min_same_auc,
            max_utility_cost=max_utility_cost,
            accept_utility_cost=accept_utility_cost,
        )
    threshold.save(out)
    click.echo(threshold.describe())
    click.echo(f"saved {out}")
