"""The overview picture of a guarded generation run: what was released, what it lies nearest to, what was refused and why.

One PNG, four rows: the released images; beside each (below it) its nearest training image in the
guard's primary check; a few draws the guard refused, drawn again from their seeds; and their nearest
training images, each refused draw captioned with its outcome (``too_close``: the check it failed and
its distance against tau; ``implausible``: its plausibility distance against the radius).

The picture shows training images and near-copies the guard refused, which a release must never hold,
so it is the data owner's, like the private ``RELEASE_DIR.items.csv``: it lies **beside** the release,
as ``RELEASE_DIR.overview.png`` (:func:`overview_path`), not inside the folder that is shared.

Examples
--------
>>> overview_path("/runs/demo/release").name
'release.overview.png'
>>> row = {"pixel_decision": "fail", "pixel_distance": "0.031", "pixel_tau": "0.04", "plausibility_decision": "pass"}
>>> refusal_reason(row, ["pixel"])
'too_close: pixel 0.031 < tau 0.04'
>>> refusal_reason(dict(row, pixel_decision="pass", plausibility_decision="fail", plausibility_distance="0.3", plausibility_radius="0.25"), ["pixel"])
'implausible: 0.3 > radius 0.25'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monai_pso.data import DataSource, load_image, load_source
from monai_pso.data.image_files import as_stored
from monai_pso.errors import DataSourceError
from monai_pso.guard.checker import PrivacyChecker
from monai_pso.index.query import nearest_training_items
from monai_pso.io import write_atomically
from monai_pso.release import layout
from monai_pso.release.reader import open_release, read_item_map, read_rows

#: Suffix of the overview picture beside a release folder.
OVERVIEW_SUFFIX = ".overview.png"


def overview_path(release_dir: str | Path) -> Path:
    """``RELEASE_DIR.overview.png``: the owner-only overview picture, beside (never inside) the release."""
    release_dir = Path(release_dir)
    return release_dir.with_name(release_dir.name + OVERVIEW_SUFFIX)


def refusal_reason(row: Mapping[str, Any], checks: Sequence[str]) -> str:
    """Why the guard refused a draw, read from its audit row: the copy checks it failed, else implausible."""
    failed = [name for name in checks if row.get(f"{name}_decision") == "fail"]
    if failed:
        return "too_close: " + ", ".join(f"{name} {float(row[f'{name}_distance']):.3g} < tau {float(row[f'{name}_tau']):.3g}" for name in failed)
    if row.get("plausibility_decision") == "fail":
        return f"implausible: {float(row['plausibility_distance']):.3g} > radius {float(row['plausibility_radius']):.3g}"
    return "released"


@dataclass(frozen=True)
class OverviewItem:
    """One column of the picture: a generated image ``(1, *spatial)``, its nearest training image, a caption."""

    image: np.ndarray
    nearest: np.ndarray
    caption: str


def read_draws(release_dir: str | Path) -> list[dict[str, str]]:
    """The rows of a generation run's ``draws.csv`` (one per draw), as text."""
    return read_rows(Path(release_dir) / layout.DRAWS_FILE, "missing: only a generation run logs its draws")[1]


def draw_again(release_dir: str | Path, workflow: Any, rows: Sequence[Mapping[str, str]], modality: str = "other") -> list[np.ndarray]:
    """The images of ``draws.csv`` rows of a generation run, drawn again from their seeds, as the guard saw them.

    Each row is mapped back to its request through the owner's ``RELEASE_DIR.items.csv``; ``workflow`` is
    the run's :class:`~monai_pso.engines.GenerationWorkflow` (its ``requests``, ``redraw_request`` and
    ``sample``); each image is stored as the release's format stores it (the values the guard checked).
    """
    image_format = open_release(release_dir).manifest["image_format"]
    own_ids = read_item_map(release_dir)
    requests = {request["item_id"]: request for request in workflow.requests}
    images = []
    for row in rows:
        request, attempt = requests[own_ids[row["item"]]], int(row["draw"]) - 1
        if attempt:
            request = workflow.redraw_request(request, attempt)
        images.append(as_stored(workflow.sample([request])[0].numpy(), image_format, modality))
    return images


def refused_draws(release_dir: str | Path, workflow: Any, limit: int = 4, modality: str = "other") -> list[tuple[np.ndarray, dict[str, str]]]:
    """Up to ``limit`` draws the guard refused, drawn again (:func:`draw_again`), with their ``draws.csv`` rows.

    Each reason (``too_close``, ``implausible``) is taken in turn, so both show when both occurred.
    """
    checks = open_release(release_dir).checks
    by_reason: dict[str, list[dict[str, str]]] = {}
    for row in read_draws(release_dir):
        if row["released"] != "true":
            by_reason.setdefault(refusal_reason(row, checks).partition(":")[0], []).append(row)
    queues = list(by_reason.values())
    picked = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)][:limit]
    return list(zip(draw_again(release_dir, workflow, picked, modality), picked))


def nearest_training_images(checker: PrivacyChecker, training: DataSource, images: np.ndarray) -> list[np.ndarray]:
    """Per image of ``images`` ``(B, 1, *spatial)``: its nearest training image in the guard's primary check."""
    check = checker.checks[0]
    found = nearest_training_items(check.index, check.embedder, images, check.threshold.views)
    records = {record.item_id: record for record in training}
    missing = [item for item in found.item_id if item not in records]
    if missing:
        raise DataSourceError(training.description, f"lacks training item {missing[0]} of the guard's index (another source or split?)")
    return [load_image(records[item]) for item in found.item_id]


def released_images(release_dir: str | Path) -> tuple[list[np.ndarray], list[dict[str, str]]]:
    """The released images ``(1, *spatial)`` of a release, in ``audit.csv`` order, and their audit rows."""
    release = open_release(release_dir)
    files = release.files_by_item()
    rows = [row for row in release.rows if row["released"] == "true"]
    records = {Path(record.image).name: record for record in load_source(str(Path(release_dir) / layout.IMAGES_DIR))} if rows else {}
    return [load_image(records[Path(files[row["item"]][0]).name]) for row in rows], rows


def write_overview(
    release_dir: str | Path,
    checker: PrivacyChecker,
    training: DataSource,
    refused: Sequence[tuple[np.ndarray, Mapping[str, Any]]] = (),
    columns: int = 8,
) -> Path:
    """Write ``RELEASE_DIR.overview.png``: up to ``columns`` released images and the ``refused`` draws, each over its nearest training image.

    Parameters
    ----------
    release_dir
        A published release.
    checker
        The guard it was made with (its primary check finds the nearest training images).
    training
        The guard's training split (the images its index holds).
    refused
        Refused draws and their audit rows (:func:`refused_draws`).
    columns
        Most images per row.
    """
    release = open_release(release_dir)
    images, rows = released_images(release_dir)
    images, rows = images[:columns], rows[:columns]
    captions = [f"released\n{row['check']} {float(row['nn_distance']):.3g} >= {float(row['threshold']):.3g}" for row in rows]
    refused = list(refused)[:columns]
    refused_captions = [refusal_reason(row, release.checks).replace(": ", "\n", 1).replace(", ", "\n") for _, row in refused]
    released_items = _items(checker, training, images, captions)
    refused_items = _items(checker, training, [image for image, _ in refused], refused_captions)
    counts = release.counts
    title = f"released {counts['released']} of {counts['requested']} requested ({counts['draws']} draws checked); refused draws drawn again from their seeds"
    return plot_overview(overview_path(release_dir), released_items, refused_items, title, columns)


def _items(checker: PrivacyChecker, training: DataSource, images: Sequence[np.ndarray], captions: Sequence[str]) -> list[OverviewItem]:
    """Images, their nearest training images and their captions as picture columns."""
    if not images:
        return []
    nearest = nearest_training_images(checker, training, np.stack(images))
    return [OverviewItem(image, near, caption) for image, near, caption in zip(images, nearest, captions)]


def _picture(image: np.ndarray) -> np.ndarray:
    """A 2D view of ``(1, *spatial)``: the image itself, or a volume's middle slice along its last axis."""
    plane = np.asarray(image, np.float32)[0]
    return plane if plane.ndim == 2 else plane[..., plane.shape[-1] // 2]


def plot_overview(path: str | Path, released: Sequence[OverviewItem], refused: Sequence[OverviewItem], title: str, columns: int = 8) -> Path:
    """The overview PNG: released images over their nearest training images, then refused draws over theirs."""
    width = max(1, min(columns, max(len(released), len(refused))))
    figure = Figure(figsize=(1.45 * width + 1.2, 7.2), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(4, width)
    groups = (("released", released), ("refused draw", refused))
    for group, (label, items) in enumerate(groups):
        for column in range(width):
            top, bottom = figure.add_subplot(grid[2 * group, column]), figure.add_subplot(grid[2 * group + 1, column])
            for axes in (top, bottom):
                axes.set_xticks([])
                axes.set_yticks([])
            if column < len(items):
                top.imshow(_picture(items[column].image), cmap="gray", vmin=0.0, vmax=1.0)
                bottom.imshow(_picture(items[column].nearest), cmap="gray", vmin=0.0, vmax=1.0)
                top.set_title(items[column].caption, fontsize=6)
            else:
                for axes in (top, bottom):
                    axes.axis("off")
                if column == 0:
                    top.text(0.0, 0.5, f"no {label}s", fontsize=8, transform=top.transAxes)
            if column == 0:
                top.set_ylabel(label, fontsize=8)
                bottom.set_ylabel("nearest training", fontsize=8)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda stream: figure.savefig(stream, format="png"))
    return path
