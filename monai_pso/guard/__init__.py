"""The privacy guard: the decision (:class:`PrivacyChecker`), MONAI transforms, ignite handlers, releases.

See ``docs/guard.md``. Public namespaces: :mod:`monai_pso.transforms` and :mod:`monai_pso.handlers`.
"""

from monai_pso.guard.audit_log import AuditLog
from monai_pso.guard.checker import Decisions, GuardCheck, PrivacyChecker
from monai_pso.guard.defaults import build_default_guard, default_embedders
from monai_pso.guard.handler import HANDLER_AUDIT_COLUMNS, PrivacyEvents, PrivacyGuard
from monai_pso.guard.hashing import PatientHasher
from monai_pso.guard.monitor import MemorizationMonitor
from monai_pso.guard.release import RELEASE_AUDIT_COLUMNS, ReleaseReport, gate_source
from monai_pso.guard.transforms import DECISION_KEYS, GATE_MODES, PrivacyGate, PrivacyGated, released_collate, released_only

__all__ = [
    "AuditLog",
    "DECISION_KEYS",
    "Decisions",
    "GATE_MODES",
    "GuardCheck",
    "HANDLER_AUDIT_COLUMNS",
    "MemorizationMonitor",
    "PatientHasher",
    "PrivacyChecker",
    "PrivacyEvents",
    "PrivacyGate",
    "PrivacyGated",
    "PrivacyGuard",
    "RELEASE_AUDIT_COLUMNS",
    "ReleaseReport",
    "build_default_guard",
    "default_embedders",
    "gate_source",
    "released_collate",
    "released_only",
]
