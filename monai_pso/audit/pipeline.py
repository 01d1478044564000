"""Audit a release on disk end to end: read the inputs, run the tests, write the report.

This is what ``monai-pso audit`` runs; call it directly from Python or a bundle.

Examples
--------
>>> request = AuditRequest(index_dir="runs/index", holdout="phantom:2d", control="phantom:2d",
...                        out_dir="runs/audit", release_dir="runs/release")  # doctest: +SKIP
>>> audit_release(request).conclusion  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monai_pso.audit.embedders import default_audit_embedder, guard_embedder, guard_identity_embedder, parse_embedder_spec
from monai_pso.audit.inputs import (
    check_training_images,
    cohort_records,
    cumulative_release,
    read_index_reference,
    read_release,
    training_records,
)
from monai_pso.audit.report import write_report
from monai_pso.audit.runner import AuditCohorts, AuditResult, AuditSettings, GuardReference, run_audit
from monai_pso.data import load_image
from monai_pso.errors import ConfigurationError


@dataclass
class AuditRequest:
    """Everything ``monai-pso audit`` takes (see ``docs/audit.md``).

    Parameters
    ----------
    index_dir
        The index the release was gated against (training items, guard embedder, ledger).
    holdout, control
        SOURCE strings of patients never used in training, with the split to take (``all``: every record).
    out_dir
        Where the report folder goes.
    release_dir
        The release folder; ``None`` with ``cumulative``.
    cumulative
        Audit the union of all releases in the index's ledger instead.
    embedders
        Audit embedder specifications (:func:`~monai_pso.audit.embedders.parse_embedder_spec`); the first
        is the audit embedding. Empty: :func:`~monai_pso.audit.embedders.default_audit_embedder`.
    training
        SOURCE of the training images, when the index's own source cannot be re-read.
    settings
        Confidence level, seed, bootstrap size.
    """

    index_dir: str | Path
    holdout: str
    control: str
    out_dir: str | Path
    release_dir: str | Path | None = None
    cumulative: bool = False
    holdout_split: str = "val"
    control_split: str = "test"
    embedders: Sequence[str] = ()
    training: str | None = None
    settings: AuditSettings = field(default_factory=AuditSettings)


def audit_release(request: AuditRequest) -> AuditResult:
    """Run the audit the request describes and write its report to ``request.out_dir``."""
    if request.cumulative == (request.release_dir is not None):
        raise ConfigurationError("release_dir, cumulative: give either a release folder or cumulative=True, not both")
    reference = read_index_reference(request.index_dir)
    entries = []
    if request.cumulative:
        release, entries = cumulative_release(request.index_dir, reference)
    else:
        release = read_release(request.release_dir, reference)
    training = training_records(reference, request.training)
    guard = GuardReference(
        guard_embedder(reference.embedder_settings), release.threshold, reference.embedder_fingerprint, reference.fingerprint, guard_identity_embedder(request.index_dir)
    )
    if guard.embedder is not None:
        check_training_images(training, reference, guard.embedder)
    cohorts = AuditCohorts(
        release.records,
        training,
        cohort_records(request.holdout, request.holdout_split),
        cohort_records(request.control, request.control_split),
    )
    embedders = [parse_embedder_spec(spec) for spec in request.embedders]
    if not embedders:
        embedders = [default_audit_embedder(load_image(release.records[0]).ndim - 1)]
    result = run_audit(cohorts, embedders, request.settings, guard)
    context = {
        "release": [str(path) for path in release.paths],
        "index": str(reference.directory),
        "cumulative": request.cumulative,
        "ledger_entries": [{"seq": e.seq, "hash": e.hash, "release_path": e.release_path, "time": e.time} for e in entries],
        "cohorts": {
            "training": request.training or reference.source,
            "holdout": f"{request.holdout} [split={request.holdout_split}]",
            "control": f"{request.control} [split={request.control_split}]",
        },
    }
    write_report(result, request.out_dir, context)
    return result
