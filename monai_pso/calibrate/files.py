"""Where :func:`write_json_atomic` was first defined; it is now :func:`monai_pso.io.write_json_atomically`.

Kept for the modules of the generation run and of the gate's release (``monai_pso.engines.release``,
``monai_pso.guard.release``) that still import it from here; new code imports :mod:`monai_pso.io`.
"""

from monai_pso.io import write_json_atomically as write_json_atomic

__all__ = ["write_json_atomic"]
