"""``monai-pso bundle``: the MONAI bundles that ship with the package, listed or copied out to a folder.

The bundles are package data of the wheel (``monai_pso/bundles/``) and ``bundles/`` of a source checkout
(:func:`monai_pso.engines.bundle_runs.bundles_folder`); an exported copy runs with
``python -m monai.bundle run --config_file DIR/configs/train.json`` like any model-zoo bundle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from monai_pso.errors import MonaiPsoError


@click.group()
def bundle() -> None:
    """The MONAI bundles shipped with monai-pso (ldm_2d, ldm_3d and the downstream tasks)."""


@bundle.command("list")
def list_bundles() -> None:
    """Each shipped bundle: its name, version and task (from configs/metadata.json)."""
    from monai_pso.engines.bundle_runs import bundle_names, bundle_template

    rows = [("name", "version", "task")]
    for name in bundle_names():
        metadata = json.loads((bundle_template(name) / "configs" / "metadata.json").read_text())
        rows.append((name, str(metadata.get("version", "-")), str(metadata.get("task", metadata.get("name", "-")))))
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for row in rows:
        click.echo(f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}")


@bundle.command("export")
@click.argument("name")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
def export_bundle(name: str, directory: Path) -> None:
    """Copy the bundle NAME to DIR (created if absent; an existing DIR must be empty)."""
    from monai_pso.engines.bundle_runs import bundle_template

    source = bundle_template(name)
    if directory.exists() and any(directory.iterdir()):
        raise MonaiPsoError(f"{directory}: not empty; export a bundle to a new or empty folder")
    shutil.copytree(source, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    configs = ", ".join(sorted(path.name for path in (directory / "configs").glob("*.json")))
    click.echo(f"exported bundle {name} -> {directory} (configs: {configs})")
