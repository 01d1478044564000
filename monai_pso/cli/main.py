"""``monai-pso``: the command group, and the one place where user errors become one line and exit 2.

Every command module imports only click and light modules at import time (torch, monai and faiss are
imported inside the commands), so ``monai-pso --help`` is instant.
"""

from __future__ import annotations

import importlib

import click

from monai_pso import __version__
from monai_pso.errors import MonaiPsoError

#: The commands of ``monai-pso``: the module and attribute name of each click command.
COMMANDS = (
    ("monai_pso.cli.audit", "audit"),
    ("monai_pso.cli.data", "data"),
    ("monai_pso.cli.generate", "generate"),
    ("monai_pso.cli.demo", "demo"),
    ("monai_pso.cli.pacs", "export"),
    ("monai_pso.cli.pacs", "fetch"),
    ("monai_pso.cli.study", "study"),
    ("monai_pso.cli.embed", "embed"),
    ("monai_pso.cli.index", "index"),
    ("monai_pso.cli.calibrate", "calibrate"),
    ("monai_pso.cli.gate", "gate"),
    ("monai_pso.cli.guard", "guard"),
    ("monai_pso.cli.bundle", "bundle"),
)


class PsoGroup(click.Group):
    """A click group that reports :class:`~monai_pso.errors.MonaiPsoError` as one line, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MonaiPsoError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(2)


@click.group(cls=PsoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="monai-pso")
def main() -> None:
    """Privacy-safeguarded synthetic medical imaging for MONAI.

    SOURCE arguments name a dataset: phantom:2d, phantom:3d, a MedMNIST .npz file, or a folder of
    NIfTI, DICOM or PNG/JPEG images, each with optional ?key=value options (see docs/data.md).
    """


for _module, _name in COMMANDS:
    main.add_command(getattr(importlib.import_module(_module), _name))
