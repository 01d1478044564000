"""Summaries of gate decisions: distance statistics, a histogram, and its plot with tau marked.

Shared by the generation handler (:class:`~monai_pso.guard.handler.PrivacyGuard`) and the release
command (:func:`~monai_pso.guard.release.gate_source`), so both write the same ``summary.json``
``distances`` block and the same ``distances.png``.

Examples
--------
>>> stats = distance_statistics(np.array([0.0, 1.0, 2.0, 3.0]), threshold=1.5, bins=3)
>>> stats["count"], stats["below_threshold"], stats["histogram"]["counts"]
(4, 2, [1, 1, 2])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monai_pso.embed.persistence import write_atomically


def distance_statistics(distances: np.ndarray, threshold: float, bins: int = 30) -> dict[str, Any]:
    """Count, min / 5th percentile / median / max, how many lie below ``threshold``, and a histogram.

    The histogram's edges span ``[0, max(largest distance, 1.25 threshold)]`` so tau always lies inside.
    """
    values = np.asarray(distances, dtype=np.float64)
    top = max(float(values.max()) if values.size else 0.0, 1.25 * float(threshold))
    counts, edges = np.histogram(values, bins=bins, range=(0.0, top))
    stats: dict[str, Any] = {"count": int(values.size), "below_threshold": int((values < threshold).sum())}
    for name, quantile in (("min", 0), ("p5", 5), ("median", 50), ("max", 100)):
        stats[name] = float(np.percentile(values, quantile)) if values.size else None
    stats["histogram"] = {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}
    return stats


def plot_distances(path: str | Path, distances: np.ndarray, released: np.ndarray, threshold: float, title: str, bins: int = 30) -> Path:
    """Write a PNG histogram of nearest-neighbour distances, released and rejected stacked, tau marked."""
    values = np.asarray(distances, dtype=np.float64)
    released = np.asarray(released, dtype=bool)
    top = max(float(values.max()) if values.size else 0.0, 1.25 * float(threshold))
    figure = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.hist([values[released], values[~released]], bins=bins, range=(0.0, top), stacked=True, label=["released", "rejected"], color=["tab:blue", "tab:red"])
    axes.axvline(threshold, color="black", linestyle="--", label=f"tau = {threshold:.4g}")
    axes.set_xlabel("distance to the nearest training image")
    axes.set_ylabel("images")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda stream: figure.savefig(stream, format="png"))
    return path
