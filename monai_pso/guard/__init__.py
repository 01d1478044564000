"""The privacy guard: the decision (:class:`PrivacyChecker`), the guard folder, MONAI transforms, ignite handlers.

Build a guard with :func:`build_guard` (``monai-pso guard build``) and get its checker with
:func:`load_checker`, the one factory every gate, handler and command uses. See ``docs/guard.md``.
Public namespaces: :mod:`monai_pso.transforms` and :mod:`monai_pso.handlers`; releases are :mod:`monai_pso.release`.
"""

from monai_pso.guard.audit_log import AuditLog, audit_columns
from monai_pso.guard.checker import Decisions, GuardCheck, PrivacyChecker
from monai_pso.guard.folder import DEFAULT_CHECKS, GUARD_FILE, build_guard, load_checker, read_guard
from monai_pso.guard.handler import PrivacyEvents, PrivacyGuard
from monai_pso.guard.hashing import PatientHasher
from monai_pso.guard.monitor import MemorizationMonitor
from monai_pso.guard.plausibility import PlausibilityCheck
from monai_pso.guard.transforms import DECISION_KEYS, GATE_MODES, PrivacyGate, PrivacyGated, released_collate, released_only

__all__ = [
    "AuditLog",
    "DECISION_KEYS",
    "DEFAULT_CHECKS",
    "Decisions",
    "GATE_MODES",
    "GUARD_FILE",
    "GuardCheck",
    "MemorizationMonitor",
    "PatientHasher",
    "PlausibilityCheck",
    "PrivacyChecker",
    "PrivacyEvents",
    "PrivacyGate",
    "PrivacyGated",
    "PrivacyGuard",
    "audit_columns",
    "build_guard",
    "load_checker",
    "read_guard",
    "released_collate",
    "released_only",
]
