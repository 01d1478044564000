"""Time to embed the guard's query views of one image: every check of the default guard, on IXI T1 volumes (3D) and slices (2D).

For each of the first ``--volumes`` IXI T1 volumes (``/work/shared/data/ixi_t1_2mm``, 120 x 120 x 90, scaled
to ``[0, 1]`` by their 99.5th percentile) and its middle axial slice, every check of the default guard
(:func:`monai_pso.guard.build_guard`: the ``pixel`` checks of :data:`monai_pso.guard.folder.DEFAULT_CHECKS`,
the copy checks of :data:`monai_pso.guard.copy_check.CHECK_NAMES` and the plausibility check's ``fidelity``
embedding) embeds the image's default query views (:func:`monai_pso.embed.views.default_query_views`)
exactly as the guard does (:meth:`~monai_pso.embed.views.QueryViews.embed`). Reported per image and check: wall seconds and the
process's CPU seconds (user + system: on a shared machine the wall time includes waiting for a core),
the best of ``--repeat`` runs, one thread.

Usage::

    python benchmarks/views.py                 # benchmarks/results/views_cpu.json
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_pso import __version__
from monai_pso.embed.aligned import AlignedEmbedder
from monai_pso.embed.base import Embedder
from monai_pso.embed.registry import create_embedder
from monai_pso.embed.views import QueryViews, default_query_views
from monai_pso.guard.copy_check import CHECK_NAMES
from monai_pso.guard.folder import DEFAULT_CHECKS
from monai_pso.guard.plausibility import PLAUSIBILITY_DIR, PLAUSIBILITY_EMBEDDER
from monai_pso.io import write_json_atomically
from monai_pso.threads import cpu_threads

SHARED = Path(os.environ.get("MONAI_PSO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def ixi_volumes(count: int) -> list[np.ndarray]:
    """The first ``count`` IXI T1 volumes, scaled to ``[0, 1]``."""
    import nibabel as nib

    files = sorted(glob.glob(str(SHARED / "ixi_t1_2mm" / "t1" / "*.nii.gz")))[:count]
    if not files:
        raise SystemExit(f"{SHARED / 'ixi_t1_2mm'}: no IXI volumes")
    volumes = []
    for path in files:
        volume = np.asarray(nib.load(path).dataobj, np.float32)
        volumes.append(np.clip(volume / np.percentile(volume, 99.5), 0.0, 1.0))
    return volumes


def best_time(call, repeat: int) -> tuple[float, float]:
    """Best wall and best CPU (user + system) seconds of ``repeat`` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        before, start = os.times(), time.perf_counter()
        call()
        after = os.times()
        walls.append(time.perf_counter() - start)
        cpus.append((after.user - before.user) + (after.system - before.system))
    return min(walls), min(cpus)


def guard_embedders(spatial_dims: int) -> dict[str, Embedder]:
    """The default guard's checks and the embedder each measures in."""
    checks = {name: create_embedder("pixel", **settings) for name, settings in DEFAULT_CHECKS.items()}
    checks.update({name: AlignedEmbedder(windows=windows) for windows, name in CHECK_NAMES.items()})
    checks[PLAUSIBILITY_DIR] = create_embedder(PLAUSIBILITY_EMBEDDER, spatial_dims=spatial_dims)
    return checks


def measure(images: list[np.ndarray], spatial_dims: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for check, embedder in guard_embedders(spatial_dims).items():
        views = QueryViews() if check == PLAUSIBILITY_DIR else default_query_views(embedder, spatial_dims)  # plausibility: the image (and mirrors) only
        walls, cpus, vectors = [], [], 0
        for image in images:
            batch = torch.from_numpy(image)[None, None]
            vectors = int(views.embed(embedder, batch).valid.sum())
            wall, cpu = best_time(lambda b=batch, v=views, e=embedder: v.embed(e, b), repeat)
            walls.append(wall)
            cpus.append(cpu)
        rows.append({
            "check": check,
            "spatial_dims": spatial_dims,
            "image_shape": list(images[0].shape),
            "views": views.count(spatial_dims),
            "vectors_per_image": vectors,
            "images": len(images),
            "wall_s_per_image": float(np.mean(walls)),
            "cpu_s_per_image": float(np.mean(cpus)),
        })
    total = {key: float(sum(r[key] for r in rows)) for key in ("wall_s_per_image", "cpu_s_per_image")}
    return rows + [{"check": "all", "spatial_dims": spatial_dims, "image_shape": list(images[0].shape), "images": len(images), **total}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "views_cpu.json")
    args = parser.parse_args()
    volumes = ixi_volumes(args.volumes)
    with cpu_threads(args.threads), torch.no_grad():
        rows = measure(volumes, 3, args.repeat) + measure([v[:, :, v.shape[2] // 2].copy() for v in volumes], 2, args.repeat)
    report = {
        "benchmark": "embedding the guard's query views of one image (every check of the default guard)",
        "package_version": __version__,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": rows,
    }
    write_json_atomically(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
