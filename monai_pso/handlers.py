"""Public ignite handlers of monai-pso (attach them to ``monai.engines`` workflows like MONAI's own).

- :class:`PrivacyGuard`: gate a generation engine's output (redraw, drop, audit, memorization alarm);
- :class:`MemorizationMonitor`: nearest-training-image statistics of samples during training, into
  ``engine.state.metrics``;
- :class:`PrivacyEvents`: the custom events they fire.

Examples
--------
>>> from monai_pso.handlers import MemorizationMonitor, PrivacyEvents, PrivacyGuard
"""

from monai_pso.guard.handler import PrivacyEvents, PrivacyGuard
from monai_pso.guard.monitor import MemorizationMonitor

__all__ = ["MemorizationMonitor", "PrivacyEvents", "PrivacyGuard"]
