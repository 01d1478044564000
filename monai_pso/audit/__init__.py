"""Privacy tests of a release, the release ledger, and audit reports.

The guard certifies a distance; the audit measures the risk that remains, for releases of monai-pso
and for synthetic images from any other generator. See ``docs/audit.md``.
"""

from monai_pso.audit.copy_rate import CopyLevel, CopyRateRow, copy_levels, copy_rate_table
from monai_pso.audit.dcr import DcrResult, dcr_holdout_test
from monai_pso.audit.distances import EmbeddedImages, distance_matrix, embed_records, nearest
from monai_pso.audit.fidelity import FidelityResult, FidelityScores, fidelity_audit, manifold_scores
from monai_pso.audit.intervals import Rate, Risk, percentile_interval, stratified_bootstrap
from monai_pso.audit.membership import MembershipResult, membership_signal
from monai_pso.audit.runner import AuditCohorts, AuditResult, AuditSettings, GuardReference, run_audit
from monai_pso.audit.singling_out import SinglingOutResult, ball_radii, singled_out, singling_out_attack
from monai_pso.audit.verdict import Measurability, measurability
from monai_pso.errors import LedgerIntegrityError
from monai_pso.release.ledger import LedgerEntry, append_entry, append_release, read_entries, verify_ledger

__all__ = [
    "AuditCohorts",
    "AuditResult",
    "AuditSettings",
    "CopyLevel",
    "CopyRateRow",
    "DcrResult",
    "EmbeddedImages",
    "FidelityResult",
    "FidelityScores",
    "GuardReference",
    "LedgerEntry",
    "LedgerIntegrityError",
    "Measurability",
    "MembershipResult",
    "Rate",
    "Risk",
    "SinglingOutResult",
    "append_entry",
    "append_release",
    "ball_radii",
    "copy_levels",
    "copy_rate_table",
    "dcr_holdout_test",
    "distance_matrix",
    "embed_records",
    "fidelity_audit",
    "manifold_scores",
    "measurability",
    "membership_signal",
    "nearest",
    "percentile_interval",
    "read_entries",
    "run_audit",
    "singled_out",
    "singling_out_attack",
    "stratified_bootstrap",
    "verify_ledger",
]
