"""``monai-pso gate``: gate every image of a SOURCE and release the ones that pass, through one release builder.

Any SOURCE can be gated (every split), so images from any generator can be released the same way.
Each image is first turned into the values its file will hold (:func:`~monai_pso.data.image_files.as_stored`),
then checked; the certificate is about the written file. Under ``torchrun`` (an initialised process
group) each rank gates every ``world``-th image and one release is written (:mod:`monai_pso.release.builder`).

Examples
--------
>>> report = gate_source("generated/", load_checker("GUARD_DIR"), "release/", fmt="png")  # doctest: +SKIP
>>> report.counts["released"], report.counts["requested"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from monai_pso.data import DataSource, load_source, record_batches
from monai_pso.data.image_files import as_stored
from monai_pso.errors import DataSourceError, ImageValueError
from monai_pso.guard.checker import PrivacyChecker
from monai_pso.release.builder import ReleaseBuilder, ReleaseReport
from monai_pso.release.layout import release_name


def _check_source(source: DataSource, fmt: str) -> None:
    names = [release_name(r.item_id) for r in source]
    if len(set(names)) != len(names):
        raise DataSourceError(source.description, "two items map to the same release file name")
    if fmt == "dicom":
        from monai_pso.data.dicom_iod import modality_profile

        for modality in {r.modality for r in source}:
            modality_profile(modality)  # raises DicomWriteError for modalities without a DICOM IOD


def gate_source(
    candidates: str | DataSource,
    checker: PrivacyChecker,
    release_dir: str | Path,
    fmt: str = "png",
    batch_size: int = 64,
    progress: bool = True,
) -> ReleaseReport:
    """Gate every image of ``candidates`` and write the release into ``release_dir``.

    Parameters
    ----------
    candidates
        SOURCE string or data source of candidate (synthetic) images; all splits are gated.
    checker
        The guard (:func:`~monai_pso.guard.load_checker`); the release gets its own salt.
    release_dir
        The new release folder (must not exist, or be empty).
    fmt
        ``png`` (2D), ``nifti`` (2D/3D) or ``dicom`` (modalities ct, mri, pet, xray).
    batch_size, progress
        Images per check; a progress bar.

    Raises
    ------
    MonaiPsoError
        On any bad input; nothing is released then.
    """
    source = load_source(candidates)
    _check_source(source, fmt)
    with ReleaseBuilder(release_dir, checker, fmt, command="gate", source=source.description) as builder:
        records = source.records[builder.rank :: builder.world]
        with tqdm(total=len(records), desc="Gating", unit="img", disable=not progress or builder.rank != 0) as bar:
            for batch, images in record_batches(records, batch_size):
                stored = np.stack([as_stored(image, fmt, r.modality) for r, image in zip(batch, images)])
                try:
                    decisions = builder.checker.decide(stored)
                except ImageValueError as error:
                    raise ImageValueError(f"{batch[0].item_id} (and {len(batch) - 1} more in its batch): {error}") from None
                for i, record in enumerate(batch):
                    builder.add(record.item_id, decisions.row(i), stored[i], split=record.split, modality=record.modality, spacing=record.spacing)
                bar.update(len(batch))
        return builder.finish()
