"""``monai-pso``: the command group, and the one place where user errors become one line and exit 2."""

from __future__ import annotations

import click

from monai_pso import __version__
from monai_pso.errors import MonaiPsoError


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


def _register() -> None:
    from monai_pso.cli import pacs
    from monai_pso.cli.data import data

    from monai_pso.cli.audit import audit; main.add_command(audit)  # noqa: E702
    main.add_command(data)
    from monai_pso.cli.generate import generate; main.add_command(generate)  # noqa: E702
    from monai_pso.cli.demo import demo; main.add_command(demo)  # noqa: E702
    main.add_command(pacs.export)
    main.add_command(pacs.fetch)
    from monai_pso.cli.study import study; main.add_command(study)  # noqa: E702
    from monai_pso.cli.embed import embed; main.add_command(embed)  # noqa: E702
    from monai_pso.cli.index import index; main.add_command(index)  # noqa: E702
    from monai_pso.cli.calibrate import calibrate; main.add_command(calibrate)  # noqa: E702
    from monai_pso.cli.gate import gate; main.add_command(gate)  # noqa: E702


_register()
