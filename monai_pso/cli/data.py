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
    """Per split: items, patients, image shapes, intensity range and label counts.

    A folder of images of several shapes is summarised with a table of the shapes and their counts; a
    datalist's class names are shown with the class index each is read as.
    """
    from monai_pso.data.summary import load_for_summary, summarize

    click.echo(summarize(load_for_summary(source), split).to_text())
