"""Public MONAI-style transforms of monai-pso, in one namespace.

- data: :class:`LoadRecordImaged` (images of a monai-pso datalist), :class:`IntensityPreset` /
  :class:`IntensityPresetd` (modality presets to ``[0, 1]``);
- degradations for the downstream tasks: :class:`SimulateLowDose` / :class:`SimulateLowDosed`,
  :class:`Downsample` / :class:`Downsampled`;
- the privacy gate: :class:`PrivacyGate` / :class:`PrivacyGated`, with :func:`released_only` and
  :func:`released_collate` for its ``drop`` and ``flag`` modes.

Examples
--------
>>> from monai_pso.transforms import IntensityPresetd, LoadRecordImaged, PrivacyGated
"""

from monai_pso.data.degrade import Downsample, Downsampled, SimulateLowDose, SimulateLowDosed
from monai_pso.data.loading import LoadRecordImaged
from monai_pso.data.normalize import IntensityPreset, IntensityPresetd
from monai_pso.guard.transforms import DECISION_KEYS, GATE_MODES, PrivacyGate, PrivacyGated, is_released, released_collate, released_only

__all__ = [
    "DECISION_KEYS",
    "Downsample",
    "Downsampled",
    "GATE_MODES",
    "IntensityPreset",
    "IntensityPresetd",
    "LoadRecordImaged",
    "PrivacyGate",
    "PrivacyGated",
    "SimulateLowDose",
    "SimulateLowDosed",
    "is_released",
    "released_collate",
    "released_only",
]
