"""Options shared by several commands, so that each means the same everywhere.

Examples
--------
>>> import click
>>> @click.command()
... @threads_option
... def job(threads: int) -> None:
...     click.echo(threads)
>>> from click.testing import CliRunner
>>> CliRunner().invoke(job, ["--threads", "2"]).output
'2\\n'
"""

from __future__ import annotations

import click

#: ``--threads N``: CPU threads of torch, faiss and BLAS while the command computes
#: (:func:`monai_pso.threads.cpu_threads`). One by default: on a shared 2-core machine the guard's many
#: small searches run fastest on one thread.
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="CPU threads of torch, faiss and BLAS.",
)

# Choices and defaults the CLI shows in --help, copied from library modules that import torch, so that
# `monai-pso --help` stays instant; tests/test_cli_import.py checks that each copy matches its origin.

#: :data:`monai_pso.data.records.SPLITS`: the patient splits of every SOURCE.
SPLITS = ("train", "val", "test")
#: :data:`monai_pso.calibrate.threshold.RULES`: how tau combines its holdout and same-patient parts.
THRESHOLD_RULES = ("max", "holdout", "same")
#: :data:`monai_pso.data.image_files.FORMATS`: file formats of released images.
IMAGE_FORMATS = ("png", "nifti", "dicom")
#: :data:`monai_pso.downstream.tasks.TASKS`: downstream tasks of ``monai-pso study``.
TASKS = ("classification", "denoising", "super_resolution")
#: :data:`monai_pso.downstream.tasks.MODES`: classification modes.
TASK_MODES = ("binary", "multiclass", "multilabel")
#: :data:`monai_pso.downstream.synthetic.DEFAULT_LDM_STEPS`: the study generator's training steps.
DEFAULT_LDM_STEPS = {"autoencoder": 300, "diffusion": 1500}
