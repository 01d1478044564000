"""The privacy guard of a generation run, built from the artefacts on disk (the one adapter to
:class:`monai_pso.handlers.PrivacyGuard`, so bundle configs and the CLI do not depend on its signature).

A guard has one or more *checks*, each an index folder with the threshold calibrated for it; the default
(:func:`monai_pso.guard.build_default_guard` with ``out_dir=PRIVACY_DIR``) writes two of them::

    PRIVACY_DIR/pixel/index        PRIVACY_DIR/pixel/threshold.json         whole-image pixel check
    PRIVACY_DIR/pixel-tiles/index  PRIVACY_DIR/pixel-tiles/threshold.json   tile check

An image is released only when it passes every check. The first check is the *primary* one: the release
ledger (:mod:`monai_pso.audit.ledger`) is kept beside its index, and ``manifest.json`` names its index.

Examples
--------
>>> index_dirs, threshold_paths = guard_paths("bundle/privacy")
>>> [str(Path(p).relative_to("bundle/privacy")) for p in threshold_paths]
['pixel/threshold.json', 'pixel-tiles/threshold.json']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_pso.errors import MonaiPsoError

#: Check folders of the default guard, primary first.
DEFAULT_CHECKS = ("pixel", "pixel-tiles")


def guard_paths(privacy_dir: str | Path, checks: Sequence[str] = DEFAULT_CHECKS) -> tuple[list[str], list[str]]:
    """Index folders and threshold files of the ``checks`` saved under ``privacy_dir`` (primary first).

    Examples
    --------
    >>> guard_paths("p", ["pixel"])
    (['p/pixel/index'], ['p/pixel/threshold.json'])
    """
    root = Path(privacy_dir)
    return [str(root / name / "index") for name in checks], [str(root / name / "threshold.json") for name in checks]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def guard_checker(index: Any, threshold: Any, salt_file: str | Path | None = None) -> Any:
    """A :class:`~monai_pso.guard.PrivacyChecker` from index folders and threshold files (or objects), paired.

    Missing files are reported as one :class:`~monai_pso.errors.MonaiPsoError` saying how to build them.

    Parameters
    ----------
    index, threshold
        One index (folder or object) and its threshold (JSON file or object), or paired lists.
    salt_file
        Private file holding the salt of the nearest-patient hashes (created when absent).

    Examples
    --------
    >>> guard_checker(["no/such/index"], ["no/such/threshold.json"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    monai_pso.errors.MonaiPsoError: no/such/index: reference index not found (build the guard with ...
    """
    from monai_pso.guard import PatientHasher, PrivacyChecker

    for path, what in [*((i, "reference index") for i in _as_list(index)), *((t, "threshold") for t in _as_list(threshold))]:
        if isinstance(path, (str, Path)) and not Path(path).exists():
            raise MonaiPsoError(
                f"{path}: {what} not found (build the guard with monai_pso.guard.build_default_guard(SOURCE, out_dir=PRIVACY_DIR), "
                "or `monai-pso index build` and `monai-pso calibrate`)"
            )
    checker = PrivacyChecker.create(_as_list(index), _as_list(threshold))
    if salt_file is None:
        return checker
    return PrivacyChecker(checker.checks, PatientHasher.from_file(salt_file))  # the salt file is made once all else is valid


def privacy_guard(
    index: Any,
    threshold: Any,
    workflow: Any,
    save_dir: str | Path,
    *,
    checker: Any = None,
    fmt: str | None = None,
    modality: str = "other",
    salt_file: str | Path | None = None,
    **options: Any,
) -> Any:
    """A :class:`~monai_pso.handlers.PrivacyGuard` for a :class:`~monai_pso.engines.GenerationWorkflow`.

    Rejected images are redrawn with ``workflow.regenerate`` until ``workflow.total_attempts`` draws
    (the first included) have been made, then dropped and counted.

    Parameters
    ----------
    index, threshold
        Index folder(s) and threshold file(s), paired (see :func:`guard_checker`); ignored with ``checker``.
    workflow
        The generation workflow whose images are checked.
    save_dir
        Where ``audit.csv``, ``summary.json`` and ``distances.png`` go (the release's staging folder,
        :attr:`~monai_pso.engines.ReleaseWriter.staging_dir`).
    checker
        A ready :class:`~monai_pso.guard.PrivacyChecker` instead of ``index`` / ``threshold``.
    fmt
        The release's file format: the guard checks the values that file will hold.
    modality
        For DICOM: the modality whose stored values are checked.
    salt_file
        Private salt of the nearest-patient hashes (e.g. :attr:`~monai_pso.engines.ReleaseWriter.salt_file`).
    options
        More :class:`~monai_pso.handlers.PrivacyGuard` options (``alarm_rate``, ``raise_on_alarm``...).

    Examples
    --------
    >>> guard = privacy_guard(*guard_paths("bundle/privacy"), workflow, writer.staging_dir, fmt="png")  # doctest: +SKIP
    >>> guard.attach(workflow); writer.attach(workflow); workflow.run()  # doctest: +SKIP
    """
    from monai_pso.handlers import PrivacyGuard

    if checker is None:
        checker = guard_checker(index, threshold, salt_file)
    elif salt_file is not None:
        raise MonaiPsoError("give the salt file to the checker's hasher, not beside a ready checker")
    return PrivacyGuard(
        checker=checker,
        save_dir=save_dir,
        regenerate=workflow.regenerate,
        max_attempts=workflow.total_attempts - 1,  # the guard counts redraws, the workflow counts draws
        store_as=fmt,
        modality=modality,
        **options,
    )
