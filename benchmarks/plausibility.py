"""The guard's plausibility check on real data: how many unseen real images it refuses, and how many failures.

For each data set the training split is indexed in the ``fidelity`` embedding, the radius calibrated on
the validation split (:func:`monai_pso.calibrate.plausibility.calibrate_plausibility`, ``max_refused``
0.05, k = 5, 1,000 patient-bootstrap replicates), then measured on images it never saw:

- ``unseen_real``: the test split (patients neither indexed nor calibrated on): the share refused, with
  a Clopper-Pearson 95% interval, against the 5% asked;
- what a failing generator draws (``tests/guard_support.py`` ``generator_failures``, one per test image,
  magnitudes drawn at random): heavy blur (sigma 2.5-6 px), smooth random blobs, uniform noise, flat
  images, real images under strong Gaussian noise (sd 0.15-0.35);
- ``mild_blur`` (sigma 0.5-1.0 px) of the test images: not a failure, reported to show where the
  check starts to refuse degraded but real-looking images.

Data: the 2D phantom (200 single-image patients, 24 px), and, when ``shared/data`` is present,
BreastMNIST and the PneumoniaMNIST balanced subset (28 px) and, in 3D, AdrenalMNIST3D (28^3).

Usage::

    python benchmarks/plausibility.py            # ~2 min on one core; writes benchmarks/results/plausibility.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import beta

from monai_pso import __version__
from monai_pso.calibrate.plausibility import calibrate_plausibility, kth_nearest_distances
from monai_pso.data import load_image, load_source
from monai_pso.embed.registry import create_embedder
from monai_pso.index import build_index
from monai_pso.threads import cpu_threads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from guard_support import generator_failures  # noqa: E402  (the tests' failing generator, one definition)

SHARED = Path(os.environ.get("MONAI_PSO_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = {
    "phantom_2d": "phantom:2d?patients=200&acquisitions=1&size=24&seed=5&ratios=0.4,0.3,0.3",
    "breastmnist": str(SHARED / "medmnist" / "breastmnist.npz"),
    "pneumoniamnist_subset": str(SHARED / "medmnist" / "pneumoniamnist_balanced_subset.npz"),
    "adrenalmnist3d": str(SHARED / "medmnist" / "adrenalmnist3d.npz"),
}


def clopper_pearson(refused: int, n: int) -> list[float]:
    """The exact 95% interval of a share ``refused / n``."""
    low = float(beta.ppf(0.025, refused, n - refused + 1)) if refused else 0.0
    high = float(beta.ppf(0.975, refused + 1, n - refused)) if refused < n else 1.0
    return [low, high]


def measure(source_text: str, max_refused: float, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Calibrate on val, then the refused share of each family of test-split images."""
    started = time.perf_counter()
    source = load_source(source_text)
    test = np.stack([load_image(r) for r in source.split("test")]).astype(np.float32)
    embedder = create_embedder("fidelity", spatial_dims=test.ndim - 2)
    index = build_index(source, embedder, progress=False)
    radius = calibrate_plausibility(index, embedder, source, max_refused=max_refused, n_bootstrap=n_bootstrap, seed=seed, progress=False)
    rng = np.random.default_rng(seed)
    families = {"unseen_real": test, **generator_failures(test, rng)}
    families["mild_blur"] = np.stack([ndimage.gaussian_filter(x[0], rng.uniform(0.5, 1.0))[None] for x in test]).astype(np.float32)
    results = {}
    for name, images in families.items():
        distances = np.concatenate([kth_nearest_distances(index, embedder, images[i : i + 64], radius.k) for i in range(0, len(images), 64)])
        refused = int((distances > radius.value).sum())
        results[name] = {
            "n": len(images),
            "refused": refused,
            "refused_share": refused / len(images),
            "refused_share_ci95": clopper_pearson(refused, len(images)),
            "distance_median": float(np.median(distances)),
        }
    return {
        "source": source.description,
        "n_train": index.n_items,
        "radius": {key: value for key, value in radius.to_dict().items() if key not in ("sources", "created", "package_version", "format", "decision")},
        "families": results,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-refused", type=float, default=0.05)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS), help="Data sets to measure [default: all].")
    parser.add_argument("--out", type=Path, default=RESULTS / "plausibility.json")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "script": "benchmarks/plausibility.py",
        "package_version": __version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": 1,
        "max_refused": args.max_refused,
        "datasets": {},
        "skipped": [],
    }
    with cpu_threads(1):
        for name in args.datasets:
            source = DATASETS[name]
            if not source.startswith("phantom") and not Path(source).is_file():
                out["skipped"].append(f"{name}: {source} not found")
                continue
            out["datasets"][name] = measure(source, args.max_refused, args.bootstrap, args.seed)
            families = out["datasets"][name]["families"]
            print(name, {family: round(r["refused_share"], 3) for family, r in families.items()}, f"{out['datasets'][name]['seconds']:.0f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
