"""The privacy guard of a generation run, built from the artefacts on disk (the one adapter to
:class:`monai_pso.handlers.PrivacyGuard`, so bundle configs and the CLI do not depend on its signature)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai_pso.errors import MonaiPsoError


def privacy_guard(index_dir: str | Path, threshold_path: str | Path, workflow: Any, log_dir: str | Path, **options: Any) -> Any:
    """A ``PrivacyGuard`` checking ``workflow``'s images against the index at ``index_dir`` with tau from ``threshold_path``.

    Rejected images are redrawn with ``workflow.regenerate`` up to ``workflow.total_attempts`` draws;
    the audit log and summary go to ``log_dir`` (the release's staging folder).
    """
    try:
        from monai_pso.handlers import PrivacyGuard
    except ImportError as error:
        raise MonaiPsoError(f"the privacy guard is not available in this installation ({error})") from None
    for path, what in ((index_dir, "reference index"), (threshold_path, "threshold")):
        if not Path(path).exists():
            raise MonaiPsoError(f"{path}: {what} not found (build it with `monai-pso index` / `monai-pso calibrate`)")
    from monai_pso.calibrate import Threshold
    from monai_pso.index import ReferenceIndex

    index = ReferenceIndex.load(index_dir)
    threshold = Threshold.load(threshold_path)
    return PrivacyGuard(index=index, threshold=threshold, regenerate=workflow.regenerate, max_attempts=workflow.total_attempts, output_dir=log_dir, **options)
