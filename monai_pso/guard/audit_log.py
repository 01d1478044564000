"""The per-decision audit log: one CSV schema for every decision of the guard, written row by row (flushed).

The columns (:func:`audit_columns`) are the same wherever the guard decides: a release's ``audit.csv``
(gate and generation alike), the transforms' optional log, and, with ``draw`` for ``draws``, the
per-draw log of a generation run (``draws.csv``):

- ``item``, ``split``, ``released`` (``true``/``false``), ``outcome`` (``released``, ``too_close``, ``implausible``),
  ``nn_distance`` / ``threshold`` / ``check`` / ``nearest_patient_hash`` of the deciding check (the one
  failed by most, or passed by least, as a share of tau), ``draws`` (images drawn for the item, the
  released or last one included), ``file`` (the released file, relative to the release), ``time``;
- per check ``<check>_distance``, ``<check>_tau``, ``<check>_decision`` (``pass`` / ``fail``);
- ``plausibility_distance`` (to the ``k``-th nearest training image in the fidelity embedding),
  ``plausibility_radius``, ``plausibility_decision`` (``pass`` / ``fail``; all three empty when the guard
  has no plausibility check).

Distances and thresholds are written with ``repr(float)``, which reads back to the identical float64,
so anyone can re-check every decision from the log alone (``released`` is ``nn_distance >= threshold``
and ``plausibility_distance <= plausibility_radius`` where one was measured).

Examples
--------
>>> import tempfile, pathlib, csv
>>> path = pathlib.Path(tempfile.mkdtemp()) / "audit.csv"
>>> with AuditLog(path, ("item", "nn_distance", "released")) as log:
...     log.write(item="a", nn_distance=0.1 + 0.2, released=False)
>>> row = next(csv.DictReader(path.open()))
>>> float(row["nn_distance"]) == 0.1 + 0.2, row["released"]
(True, 'false')
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_pso.errors import MonaiPsoError

#: Columns every audit row has, before the per-check ones.
BASE_COLUMNS = ("item", "split", "released", "outcome", "nn_distance", "threshold", "check", "nearest_patient_hash", "draws", "file", "time")

#: Per-check column suffixes.
CHECK_FIELDS = ("distance", "tau", "decision")

#: Columns of the plausibility check, after the per-check ones (empty without one).
PLAUSIBILITY_COLUMNS = ("plausibility_distance", "plausibility_radius", "plausibility_decision")


def check_columns(checks: Sequence[str]) -> tuple[str, ...]:
    """``<check>_distance``, ``<check>_tau``, ``<check>_decision`` for each check, in order.

    Examples
    --------
    >>> check_columns(["pixel"])
    ('pixel_distance', 'pixel_tau', 'pixel_decision')
    """
    return tuple(f"{name}_{part}" for name in checks for part in CHECK_FIELDS)


def audit_columns(checks: Sequence[str], per_draw: bool = False) -> tuple[str, ...]:
    """The audit columns of a guard with ``checks``; ``per_draw`` numbers draws (``draw``) instead of counting them.

    Examples
    --------
    >>> audit_columns(["pixel"])[:4], audit_columns(["pixel"])[-4:]
    (('item', 'split', 'released', 'outcome'), ('pixel_decision', 'plausibility_distance', 'plausibility_radius', 'plausibility_decision'))
    >>> "draw" in audit_columns(["pixel"], per_draw=True)
    True
    """
    base = tuple("draw" if c == "draws" else c for c in BASE_COLUMNS) if per_draw else BASE_COLUMNS
    return base + check_columns(checks) + PLAUSIBILITY_COLUMNS


def format_cell(value: Any) -> str:
    """CSV text of a value: exact floats, ``true``/``false`` for booleans, empty for ``None``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def utc_now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class AuditLog:
    """Append decisions to a CSV file with a fixed header, one flushed row per call.

    Parameters
    ----------
    path
        The CSV file (created, or truncated).
    columns
        Column names; a ``time`` column, when listed and not given, is filled with :func:`utc_now`.
    append
        Add to an existing log (whose header must be ``columns``) instead of starting a new one.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], append: bool = False) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = append and self.path.is_file() and self.path.stat().st_size > 0
        if existing:
            with self.path.open(newline="") as stream:
                header = tuple(next(csv.reader(stream), ()))
            if header != self.columns:
                raise MonaiPsoError(f"{self.path}: audit log has columns {', '.join(header)}, expected {', '.join(self.columns)}")
        self._stream = self.path.open("a" if append else "w", newline="")
        self._writer = csv.DictWriter(self._stream, fieldnames=self.columns)
        if not existing:
            self._writer.writeheader()
        self._stream.flush()

    def write(self, **row: Any) -> None:
        """Write one row (missing columns are empty; unknown ones raise ``ValueError``)."""
        if "time" in self.columns:
            row.setdefault("time", utc_now())
        self._writer.writerow({key: format_cell(value) for key, value in row.items()})
        self._stream.flush()
        self.rows += 1

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
