"""``monai-pso export`` and ``monai-pso fetch``: a release to a PACS, studies from a PACS (docs/pacs.md).

:mod:`monai_pso.pacs` (and pynetdicom, an optional dependency) is imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

_pacs_option = click.option("--pacs", "address", required=True, metavar="HOST:PORT", help="The PACS's DICOM address.")
_aet_option = click.option("--aet", required=True, help="Our (calling) AE title, as registered in the PACS.")
_called_option = click.option("--called-aet", default=None, help="The PACS's AE title  [default: ANY-SCP]")
_progress_option = click.option("--progress/--no-progress", default=True, help="Show a progress bar.")


@click.command("export")
@click.argument("release_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_pacs_option
@_aet_option
@_called_option
@_progress_option
@click.pass_context
def export(ctx: click.Context, release_dir: Path, address: str, aet: str, called_aet: str | None, progress: bool) -> None:
    """Send the released DICOM files of RELEASE_DIR to a PACS (C-STORE), then verify them (C-FIND).

    Only files whose item is released=true in RELEASE_DIR/audit.csv and whose header carries a passing
    monai-pso certificate are sent; every other DICOM file is refused and listed. Exits 1 when nothing
    was sent or a file was not stored or not found afterwards.
    """
    from monai_pso.pacs import PacsNode, export_release

    report = export_release(release_dir, PacsNode.parse(address, aet, called_aet), progress=progress)
    click.echo(report.summary())
    if not report.ok:
        ctx.exit(1)


@click.command("fetch")
@_pacs_option
@_aet_option
@_called_option
@click.option("--query", "queries", multiple=True, required=True, metavar="KEY=VALUE",
              help="Study-level matching key (repeatable), e.g. PatientID=P001, StudyDate=20240101-20241231.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Destination folder.")
@_progress_option
@click.pass_context
def fetch(ctx: click.Context, address: str, aet: str, called_aet: str | None, queries: tuple[str, ...], out_dir: Path, progress: bool) -> None:
    """Pull the studies matching --query from a PACS (C-FIND, then C-GET) into --out, a SOURCE folder.

    Files land in OUT/<PatientID>/<StudyInstanceUID>/<SOPInstanceUID>.dcm. Exits 1 when a study could
    not be (completely) retrieved.
    """
    from monai_pso.pacs import PacsNode, fetch_studies, parse_query

    node = PacsNode.parse(address, aet, called_aet)
    report = fetch_studies(node, parse_query(queries), out_dir, progress=progress)
    click.echo(report.summary(out_dir))
    if report.failed:
        ctx.exit(1)
