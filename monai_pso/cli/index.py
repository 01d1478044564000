"""``monai-pso index``: build the exact reference index of the training images."""

from __future__ import annotations

from pathlib import Path

import click

from monai_pso.cli.options import threads_option


@click.group()
def index() -> None:
    """Reference indexes: every training image's embedding, searched exactly (see docs/guard.md)."""


@index.command("build")
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Index folder to write.")
@click.option("--embedder", "embedder_name", default="pixel", show_default=True, help="Embedder name (pixel, reid, latent).")
@click.option("--embedder-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="A saved (fitted) embedder, for reid / latent.")
@click.option("--split", default="train", show_default=True, help="Split of SOURCE to index.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images embedded per call.")
@click.option("--tiles", default=0, show_default=True, type=click.IntRange(min=0), help="pixel embedder: tiles per axis (0: whole image).")
@click.option("--grid", default=None, type=click.IntRange(min=4), help="pixel embedder: resampled side [default: 32 in 2D, 16 in 3D].")
@click.option("--keep-ledger", is_flag=True, help="OUT is an index with a release ledger: replace the index and carry the ledger into it.")
@threads_option
def build(source: str, out: Path, embedder_name: str, embedder_dir: Path | None, split: str, batch_size: int, tiles: int, grid: int | None, keep_ledger: bool, threads: int) -> None:
    """Embed every image of the SPLIT of SOURCE and save the exact reference index in OUT.

    The recommended guard uses two pixel indexes, one whole-image (default) and one with --tiles 3.
    An index in OUT that holds a release ledger is replaced only with --keep-ledger.
    """
    from monai_pso.embed.registry import create_embedder, load_embedder
    from monai_pso.index import build_index
    from monai_pso.threads import cpu_threads

    if embedder_dir is not None:
        embedder = load_embedder(embedder_dir)
    elif embedder_name == "pixel":
        embedder = create_embedder("pixel", tiles=tiles, grid=grid)
    else:
        raise click.UsageError(f"--embedder {embedder_name} needs --embedder-dir (a fitted embedder saved by `monai-pso embed train`)")
    with cpu_threads(threads):
        reference = build_index(source, embedder, split=split, batch_size=batch_size)
    reference.save(out, keep_ledger=keep_ledger)
    click.echo(f"indexed {reference.n_items} images of {reference.n_patients} patients ({reference.n_rows} vectors of dimension {reference.dim}) with {embedder.name} -> {out}")
