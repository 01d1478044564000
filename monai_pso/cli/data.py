"""``monai-pso data``: look at a dataset before using it."""

from __future__ import annotations

import click

from monai_pso.cli.options import SPLITS


@click.group()
def data() -> None:
    """Inspect datasets named by a SOURCE string."""


@data.command("summary")
@click.argument("source")
@click.option("--split", type=click.Choice(SPLITS), default=None, help="Only this split.")
def summary(source: str, split: str | None) -> None:
    """Per split: items, patients, image shapes, intensity range and label counts."""
    from monai_pso.data import load_source
    from monai_pso.data.summary import summarize

    dataset = load_source(source)
    click.echo(summarize(dataset, split).to_text())
