"""A release's distance summaries: statistics, a histogram, and its plot with tau marked.

Written by :class:`~monai_pso.release.builder.ReleaseBuilder` for every release (``summary.json``'s
``distances`` block and ``distances.png``), whoever made it.

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

from monai_pso.io import write_atomically


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


def plot_distances(path: str | Path, panels: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str, bins: int = 30) -> Path:
    """Write a PNG with one histogram per check of distances to the nearest training image.

    Parameters
    ----------
    panels
        Per check name: distances, whether each passed the check, and its tau (a dashed line).
    """
    figure = Figure(figsize=(6, 3.2 * len(panels)), dpi=100)
    FigureCanvasAgg(figure)
    for row, (name, (distances, passed, tau)) in enumerate(panels.items(), start=1):
        values = np.asarray(distances, dtype=np.float64)
        passed = np.asarray(passed, dtype=bool)
        top = max(float(values.max()) if values.size else 0.0, 1.25 * float(tau))
        axes = figure.add_subplot(len(panels), 1, row)
        axes.hist([values[passed], values[~passed]], bins=bins, range=(0.0, top), stacked=True, label=["passed", "too close"], color=["tab:blue", "tab:red"])
        axes.axvline(tau, color="black", linestyle="--", label=f"tau = {tau:.4g}")
        axes.set_xlabel(f"distance to the nearest training image ({name} check)")
        axes.set_ylabel("images")
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda stream: figure.savefig(stream, format="png"))
    return path
