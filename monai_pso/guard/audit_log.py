"""The per-decision audit log: a CSV written row by row as decisions are made (flushed each row).

Distances and thresholds are written with ``repr(float)``, which reads back to the identical float64,
so anyone can re-check every decision from the log alone (``released`` is ``nn_distance >= threshold``).

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
                raise ValueError(f"{self.path}: audit log has columns {header}, expected {self.columns}")
        self._stream = self.path.open("a" if append else "w", newline="")
        self._writer = csv.DictWriter(self._stream, fieldnames=self.columns)
        if not existing:
            self._writer.writeheader()
        self._stream.flush()

    def write(self, **row: Any) -> None:
        """Write one row (unknown columns raise ``ValueError``)."""
        if "time" in self.columns:
            row.setdefault("time", utc_now())
        self._writer.writerow({key: format_cell(value) for key, value in row.items()})
        self._stream.flush()
        self.rows += 1

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
