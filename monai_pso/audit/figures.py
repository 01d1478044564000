"""The audit report's figures, rendered headless (matplotlib Agg) to PNG bytes for embedding.

Examples
--------
>>> png = distance_histogram(np.array([0.1, 0.2]), np.array([0.2, 0.3]))
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monai_pso.data import load_image


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def distance_histogram(released: np.ndarray, holdout: np.ndarray, bins: int = 30) -> bytes:
    """Released and holdout images' distances to the nearest image of the full training set (DCR test)."""
    figure, axes = _two_histograms(released, holdout, ("released images", "holdout images (unseen patients)"), bins)
    axes.set_xlabel("distance to the nearest training image")
    axes.set_title("Distance to closest record (DCR)")
    axes.legend()
    return _png(figure)


def _two_histograms(red: np.ndarray, blue: np.ndarray, labels: tuple[str, str], bins: int, top: float = 0.0) -> tuple[Figure, Any]:
    """A figure with two overlaid density histograms over ``[0, max(values, top)]`` (red, then blue)."""
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.add_subplot()
    top = float(max(np.max(red), np.max(blue), top, 1e-12))
    for values, label, colour in ((red, labels[0], "tab:red"), (blue, labels[1], "tab:blue")):
        axes.hist(values, bins=bins, range=(0, top), alpha=0.6, density=True, label=label, color=colour)
    axes.set_ylabel("density")
    return figure, axes


def _picture(image: np.ndarray) -> np.ndarray:
    """A 2D view of a ``(1, *spatial)`` image: itself, or the middle slice of the last axis in 3D."""
    image = np.asarray(image)[0]
    return image if image.ndim == 2 else image[..., image.shape[-1] // 2]


def nearest_pairs_figure(pairs: Sequence) -> bytes:
    """The released images closest to training, each beside its nearest training image.

    ``pairs`` holds :class:`~monai_pso.audit.runner.NearestPair` objects (released, training, distance).
    """
    rows = max(1, len(pairs))
    figure = Figure(figsize=(4.4, 2.1 * rows), dpi=100)
    for row, pair in enumerate(pairs):
        for column, (record, caption) in enumerate(((pair.released, "released"), (pair.training, "training"))):
            axes = figure.add_subplot(rows, 2, 2 * row + column + 1)
            axes.imshow(_picture(load_image(record)), cmap="gray", vmin=0.0, vmax=1.0)
            title = f"{caption}: {record.item_id}"
            axes.set_title(title if column else f"{title}\nd = {pair.distance:.4g}", fontsize=8)
            axes.set_axis_off()
    return _png(figure)


def singling_out_figure(attack: tuple[float, tuple[float, float]], control: tuple[float, tuple[float, float]], risk: float, ci: tuple[float, float]) -> bytes:
    """Attack and control success rates with their Wilson intervals; the risk in the title."""
    figure = Figure(figsize=(4.8, 3.6), dpi=100)
    axes = figure.add_subplot()
    values = [attack[0], control[0]]
    errors = np.array([[v - lo, hi - v] for v, (lo, hi) in (attack, control)]).T.clip(min=0)
    axes.bar(["training patients", "control patients"], values, yerr=errors, capsize=8, color=["tab:red", "tab:blue"])
    axes.set_ylim(0, 1)
    axes.set_ylabel("share of released images singling out one patient")
    axes.set_title(f"Singling out: risk {risk:.3f} (CI {ci[0]:.3f}-{ci[1]:.3f})", fontsize=10)
    return _png(figure)


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, ci: tuple[float, float]) -> bytes:
    """ROC curve of "closer to the release means training patient"."""
    figure = Figure(figsize=(4.2, 4.0), dpi=100)
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, color="tab:red", label=f"AUC {auc:.3f} (CI {ci[0]:.3f}-{ci[1]:.3f})")
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", label="no signal")
    axes.set_xlabel("holdout patients flagged (false positive rate)")
    axes.set_ylabel("training patients flagged (true positive rate)")
    axes.set_title("Membership signal")
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def fidelity_bars(scores: Sequence[str], release: Sequence[tuple[float, tuple[float, float]]], baseline: Sequence[tuple[float, tuple[float, float]]]) -> bytes:
    """Each fidelity score (value and interval) of the release beside the real-data baseline's.

    Examples
    --------
    >>> fidelity_bars(["precision"], [(0.2, (0.1, 0.3))], [(0.9, (0.85, 0.95))])[:4] == b"\\x89PNG"
    True
    """
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.add_subplot()
    x = np.arange(len(scores))
    for offset, (label, rows, colour) in zip((-0.2, 0.2), (("release", release, "tab:red"), ("real baseline (held-out vs training)", baseline, "tab:blue"))):
        values = [v for v, _ in rows]
        errors = np.array([[v - lo, hi - v] for v, (lo, hi) in rows]).T.clip(min=0)
        axes.bar(x + offset, values, width=0.4, yerr=errors, capsize=4, color=colour, label=label)
    axes.set_xticks(x, list(scores))
    axes.set_ylim(0, max(1.35, 1.15 * max(hi for _, (_, hi) in [*release, *baseline])))  # room for the legend above 1
    axes.axhline(1.0, color="gray", linewidth=0.8, linestyle=":")
    axes.set_ylabel("score (density may exceed 1)")
    axes.set_title("Fidelity, diversity, authenticity")
    axes.legend(fontsize=8, loc="upper left", ncols=2)
    return _png(figure)


def fidelity_distance_histogram(release: np.ndarray, baseline: np.ndarray, radius: float, bins: int = 30) -> bytes:
    """Distance of each released (and each held-out, baseline) image to the nearest real reference image, fidelity embedding."""
    figure, axes = _two_histograms(release, baseline, ("released images to held-out", "held-out images to training"), bins, top=radius)
    axes.axvline(radius, color="black", linestyle="--", linewidth=1, label="median k-NN radius of held-out images")
    axes.set_xlabel("distance to the nearest real image (fidelity embedding)")
    axes.set_title("How far from real images")
    axes.legend(fontsize=8)
    return _png(figure)
