"""monai-pso: privacy-safeguarded synthetic medical imaging for MONAI.

The package reads in the order data flows through it: ``data`` (records and sources),
``embed`` (image -> vectors), ``index`` (exact reference search), ``calibrate`` (the threshold tau),
``guard`` (the gate transform and the generation handler) and ``audit`` (release privacy tests),
with ``engines``, ``downstream`` and the ``cli`` beside them.
"""

__version__ = "0.1.0"
