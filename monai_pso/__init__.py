"""monai-pso: privacy-safeguarded synthetic medical imaging for MONAI.

The package reads in the order data flows through it: ``data`` (records and sources),
``embed`` (image -> vectors), ``index`` (exact reference search), ``calibrate`` (the threshold tau),
``guard`` (the guard folder, the gate transform and the generation handler), ``release`` (writing and
reading releases, the ledger) and ``audit`` (release privacy tests), with ``engines``, ``pacs``,
``downstream`` and the ``cli`` beside them. See ``docs/architecture.md``.
"""

__version__ = "0.1.0"
