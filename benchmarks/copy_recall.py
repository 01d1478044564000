"""Recall of the default guard on near-copies of training images, per perturbation family, and its release share.

For each data set the default guard is built on the training split (:func:`monai_pso.guard.build_guard`:
the pixel checks and the copy checks, tau of each calibrated on the ``val`` patients; no identity or
plausibility check, which answer other questions), then:

- per family of :mod:`near_copies` (made with scipy.ndimage / PIL / numpy, never with the guard's own
  views or training augmentations, each magnitude drawn at random per copy from ranges at least as wide
  as the target of issue 12): ``--copies`` near-copies of random training images, and the share the
  guard refuses (recall, Clopper-Pearson 95% interval), overall and per check;
- the share of unseen real images (the ``test`` split: patients neither indexed nor calibrated on) the
  guard releases, overall and per check;
- the time to build the guard (descriptor training included), and the CPU time per image of the ``copy``
  check's distance with its pose refinement and with the pose grid alone (``copy_check_cost``);
- the same recall and release share with the ``copy`` check measuring by its pose grid alone, its tau
  calibrated the same way (``grid_only_copy``): the comparison with and without pose refinement on the same copies.

Data (``../shared/data``, skipped when absent): the PneumoniaMNIST balanced subset (28 px, 2,428 training
images), BreastMNIST (28 px, 546), IXI T1 axial slices at 64 px (5 central slices per subject, subjects
split 70/15/15) and AdrenalMNIST3D (28^3, 3D perturbations, 1,188).

Usage::

    python benchmarks/copy_recall.py                          # every data set; writes benchmarks/results/copy_recall.json
    python benchmarks/copy_recall.py --datasets breastmnist --copies 20 --out /tmp/copy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from near_copies import FAMILIES, RANGES, near_copy  # noqa: E402

from monai_pso import __version__  # noqa: E402
from monai_pso.calibrate import calibrate_threshold  # noqa: E402
from monai_pso.data import DataSource, ImageRecord, load_image, load_source  # noqa: E402
from monai_pso.embed.aligned import AlignedEmbedder  # noqa: E402
from monai_pso.guard import build_guard  # noqa: E402
from monai_pso.guard.checker import GuardCheck  # noqa: E402
from monai_pso.index import ReferenceIndex  # noqa: E402
from monai_pso.io import write_json_atomically  # noqa: E402
from monai_pso.threads import cpu_threads  # noqa: E402

SHARED = Path(os.environ.get("MONAI_PSO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def ixi_slices(folder: Path, size: int = 64, per_subject: int = 5, seed: int = 0) -> DataSource:
    """IXI T1 volumes -> ``per_subject`` central axial slices each, resized to ``size`` px; subjects split 70/15/15."""
    import nibabel as nib
    from scipy import ndimage

    files = sorted((folder / "t1").glob("*.nii.gz"))
    order = np.random.default_rng(seed).permutation(len(files))
    splits = {int(i): ("train" if k < 0.7 * len(files) else "val" if k < 0.85 * len(files) else "test") for k, i in enumerate(order)}
    records = []
    for position, path in enumerate(tqdm(files, desc="IXI slices", leave=False)):
        volume = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        centre = volume.shape[2] // 2
        subject = path.name.split("-")[0]
        for k in range(per_subject):
            plane = volume[:, :, centre + 4 * (k - per_subject // 2)]
            plane = ndimage.zoom(plane, (size / plane.shape[0], size / plane.shape[1]), order=1)
            scaled = np.clip(plane / max(float(np.percentile(volume, 99.5)), 1e-6), 0.0, 1.0)
            records.append(ImageRecord(f"{subject}-z{k}", subject, scaled[None].astype(np.float32), split=splits[position], modality="mri", normalize="none"))
    return DataSource(records, f"IXI T1 axial slices ({folder}, {per_subject} per subject, {size} px)")


#: name -> (what, loader)
DATASETS: dict[str, tuple[str, Callable[[], DataSource]]] = {
    "pneumoniamnist": ("PneumoniaMNIST balanced subset, 28 px", lambda: load_source(str(SHARED / "medmnist" / "pneumoniamnist_balanced_subset.npz"))),
    "breastmnist": ("BreastMNIST, 28 px", lambda: load_source(str(SHARED / "medmnist" / "breastmnist.npz"))),
    "ixi_slices": ("IXI T1 axial slices, 64 px", lambda: ixi_slices(SHARED / "ixi_t1_2mm")),
    "adrenalmnist3d": ("AdrenalMNIST3D, 28^3", lambda: load_source(str(SHARED / "medmnist" / "adrenalmnist3d.npz"))),
}


#: Checks by the prefix of their names: the pixel checks (``pixel``, ``pixel-tiles``) and the copy checks (``copy``, ``copy-regions``).
GROUPS = ("pixel", "copy")


def _share(refused: np.ndarray) -> dict[str, Any]:
    k, n = int(refused.sum()), len(refused)
    interval = binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"refused": k, "n": n, "share": k / n, "interval": [interval.low, interval.high]}


def _decide(checker: Any, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Released flags and, per check, passed flags of ``images (N, 1, *spatial)``."""
    released, passed = [], {name: [] for name in checker.names}
    for start in range(0, len(images), batch):
        decisions = checker.decide(images[start : start + batch])
        released.append(decisions.released)
        for name in checker.names:
            passed[name].append(decisions.distances[name] >= decisions.taus[name])
    return np.concatenate(released), {name: np.concatenate(v) for name, v in passed.items()}


def _grid_only_copy_check(checker: Any, source: DataSource) -> GuardCheck:
    """The ``copy`` check without its pose refinement (``refine_steps=0``), on the same training vectors, its tau
    calibrated as the guard's (rule ``holdout`` on ``val``, same bootstrap): the exact grid search alone."""
    check = next(c for c in checker.checks if c.name == "copy")
    grid_only = AlignedEmbedder.from_settings({**check.embedder.settings, "refine_steps": 0})
    rows = np.arange(check.index.n_rows)
    vectors, items = check.index.row_vectors(rows), check.index.item_of_rows(rows)
    index = ReferenceIndex.from_vectors(vectors, items, check.index.item_ids, check.index.patient_ids, image_shape=check.index.image_shape, embedder=grid_only, source=check.index.source)
    threshold = calibrate_threshold(index, grid_only, source, rule="holdout", n_bootstrap=200, training=source, progress=False)
    return GuardCheck.create(index, threshold, grid_only, name="copy")


def _passes(check: GuardCheck, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Per image: whether it passes ``check`` (distance >= tau)."""
    return np.concatenate([check.measure(images[start : start + batch])[0] >= check.tau for start in range(0, len(images), batch)])


def _copy_check_cost(checks: dict[str, GuardCheck], images: np.ndarray) -> dict[str, Any]:
    """CPU milliseconds per image of the ``copy`` check's distance, with its pose refinement and with the pose grid alone."""
    cost: dict[str, Any] = {}
    for key, check in checks.items():
        started = time.process_time()
        _passes(check, images)
        cost[f"{key}_ms_per_image"] = 1000.0 * (time.process_time() - started) / len(images)
    cost["refinement_ms_per_image"] = cost["refined_ms_per_image"] - cost["grid_ms_per_image"]
    cost["refine_settings"] = {key: value for key, value in checks["refined"].embedder.settings.items() if key.startswith("refine")}
    return cost


def _with_grid_only_copy(passed: dict[str, np.ndarray], grid_passed: np.ndarray) -> np.ndarray:
    """Released flags when the ``copy`` check measures with the grid alone (every other check as it is)."""
    return np.all([v for k, v in passed.items() if k != "copy"] + [grid_passed], axis=0)


def run_dataset(name: str, copies: int, max_test: int, seed: int) -> dict[str, Any]:
    """Build the guard on one data set and measure recall per family and the release share."""
    what, loader = DATASETS[name]
    source = loader()
    rng = np.random.default_rng(seed)
    train, test = source.split("train").records, source.split("test").records
    test = [test[i] for i in sorted(rng.choice(len(test), min(max_test, len(test)), replace=False))]
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        checker = build_guard(source, Path(folder) / "guard", progress=True, plausibility=False, identity=None, n_bootstrap=200)
        build_seconds = time.time() - started
        test_images = np.stack([load_image(r) for r in test])
        released, passed = _decide(checker, test_images)
        grid_check = _grid_only_copy_check(checker, source)
        grid_passed = _passes(grid_check, test_images)
        result: dict[str, Any] = {
            "data": what,
            "train_images": len(train),
            "val_images": len(source.split("val")),
            "test_images": len(test),
            "build_seconds": round(build_seconds, 1),
            "checks": {c.name: {"tau": c.tau, "embedder": c.embedder.name, "query_views": c.threshold.query_views, "utility_cost": c.threshold.to_dict()["utility_cost"]} for c in checker.checks},
            "release_share": float(released.mean()),
            "release_share_per_check": {k: float(v.mean()) for k, v in passed.items()},
            "release_share_by_group": {group: float(np.mean(np.all([v for k, v in passed.items() if k.startswith(group)], axis=0))) for group in GROUPS},
            "copy_check_cost": _copy_check_cost({"refined": next(c for c in checker.checks if c.name == "copy"), "grid": grid_check}, test_images),
            "grid_only_copy": {"tau": grid_check.tau, "release_share": float(_with_grid_only_copy(passed, grid_passed).mean()), "copy_release_share": float(grid_passed.mean())},
            "families": {},
        }
        for family in tqdm(FAMILIES, desc=f"{name} families", leave=False):
            chosen = rng.choice(len(train), copies, replace=False)
            made = np.stack([near_copy(family, load_image(train[i])[0], rng, test_images[rng.integers(len(test_images)), 0])[None] for i in chosen])
            released, passed = _decide(checker, made)
            grid_passed = _passes(grid_check, made)
            result["families"][family] = {
                **_share(~released),
                "refused_per_check": {k: float((~v).mean()) for k, v in passed.items()},
                "refused_by_group": {group: float(np.mean(~np.all([v for k, v in passed.items() if k.startswith(group)], axis=0))) for group in GROUPS},
                "grid_only_copy": {"share": float(np.mean(~_with_grid_only_copy(passed, grid_passed))), "copy": float(np.mean(~grid_passed))},
            }
        result["min_recall"] = min(r["share"] for r in result["families"].values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--copies", type=int, default=40, help="near-copies per family (3D: half)")
    parser.add_argument("--max-test", type=int, default=200, help="unseen test images per data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "copy_recall.json")
    arguments = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"shared data not found at {SHARED}")
    # the data sets measured before and not in this run are kept (a run of one data set keeps the others)
    results: dict[str, Any] = json.loads(arguments.out.read_text())["datasets"] if arguments.out.exists() else {}
    with cpu_threads(1):
        for name in arguments.datasets:
            copies = arguments.copies if name != "adrenalmnist3d" else max(10, arguments.copies // 2)
            results[name] = run_dataset(name, copies, arguments.max_test, arguments.seed)
            print(name, json.dumps({k: results[name][k] for k in ("release_share", "min_recall", "build_seconds")}), flush=True)
            document = {
                "script": "benchmarks/copy_recall.py",
                "package_version": __version__,
                "python": platform.python_version(),
                "threads": 1,
                "seed": arguments.seed,
                "copies_per_family": arguments.copies,
                "ranges": {k: list(v) if isinstance(v, tuple) else v for k, v in RANGES.items()},
                "datasets": results,
            }
            write_json_atomically(arguments.out, document, indent=1, sort_keys=False)


if __name__ == "__main__":
    main()
