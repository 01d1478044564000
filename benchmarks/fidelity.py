"""Fidelity embedding and fidelity figures: unrealistic images against held-out real images.

For each data set, three disjoint groups of real images (training, held-out, unseen) and four "releases"
of as many images as the unseen group: the unseen real images themselves, and the three kinds of
:func:`monai_pso.data.unrealistic.unrealistic_images` (smooth blobs, noise, heavily blurred unseen
images, each image with its own random parameters), plus exact copies of training images.

- ``separation``: each release's distance to the nearest training image, against the held-out images'
  (median, and the share of the release beyond the held-out images' 95th percentile), in the
  ``fidelity`` embedding and, for comparison, in the guard's default ``pixel`` embedding.
- ``scores``: :func:`monai_pso.audit.fidelity.fidelity_audit` of each release (precision, recall,
  density, coverage, authenticity with 95% bootstrap intervals, FID, KID) and the real baseline row.

Data: the phantom in 2D (60 patients x 2 acquisitions, 64 px) and 3D (24 x 2, 32 px), split by patient;
and, when ``shared/data`` is present, the PneumoniaMNIST balanced subset and BreastMNIST (2D, 28 px) and
AdrenalMNIST3D (28^3) with their official splits (train / val / test as training / held-out / unseen,
at most 600 / 150 / 150 images).

Usage::

    python benchmarks/fidelity.py        # about 1 min of CPU on one core; writes benchmarks/results/fidelity.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from monai_pso import __version__
from monai_pso.audit.fidelity import SCORES, fidelity_audit
from monai_pso.data import ImageRecord, load_image, load_source
from monai_pso.data.unrealistic import KINDS, unrealistic_images
from monai_pso.embed import create_embedder
from monai_pso.embed.base import Embedder
from monai_pso.threads import cpu_threads

SHARED = Path(os.environ.get("MONAI_PSO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
MEDMNIST = ("pneumoniamnist_balanced_subset", "breastmnist", "adrenalmnist3d")
LIMITS = {"train": 600, "val": 150, "test": 150}


def stacked(records: list[ImageRecord]) -> np.ndarray:
    return np.stack([load_image(r) for r in records]).astype(np.float32)


def phantom_groups(spec: str) -> dict[str, np.ndarray]:
    """Training / held-out / unseen images of a phantom, split by patient (3 : 1 : 1)."""
    records = load_source(spec).records
    patients = sorted({r.patient_id for r in records})
    group = {p: ("held_out", "unseen", "training", "training", "training")[i % 5] for i, p in enumerate(patients)}
    return {name: stacked([r for r in records if group[r.patient_id] == name]) for name in ("training", "held_out", "unseen")}


def medmnist_groups(path: Path) -> dict[str, np.ndarray]:
    """Training / held-out / unseen images: the file's train / val / test splits, the first :data:`LIMITS` of each."""
    source = load_source(str(path))
    names = {"train": "training", "val": "held_out", "test": "unseen"}
    return {names[split]: stacked(source.split(split).records[:limit]) for split, limit in LIMITS.items()}


def releases(groups: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    unseen = groups["unseen"]
    out = {"unseen_real": unseen, **{kind: unrealistic_images(unseen, kind, rng) for kind in KINDS}}
    out["training_copies"] = groups["training"][rng.choice(len(groups["training"]), size=min(len(unseen), len(groups["training"])), replace=False)]
    return out


def nearest(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    squared = (queries**2).sum(1)[:, None] + (references**2).sum(1)[None, :] - 2.0 * queries @ references.T
    return np.sqrt(squared.clip(min=0.0)).min(axis=1)


def vectors(embedder: Embedder, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([embedder.embed(chunk).rows() for chunk in np.array_split(batch, max(1, len(batch) // 64))]).astype(np.float64)


def separation(groups: dict[str, np.ndarray], fakes: dict[str, np.ndarray], embedders: list[Embedder]) -> list[dict[str, Any]]:
    """One row per release: in each embedding, its median distance to training (and over the held-out
    images' median), and its share beyond the held-out images' 95th percentile."""
    rows: list[dict[str, Any]] = [{"release": name} for name in fakes]
    for embedder in embedders:
        training = vectors(embedder, groups["training"])
        real = nearest(vectors(embedder, groups["held_out"]), training)
        cut = float(np.quantile(real, 0.95))
        for row, batch in zip(rows, fakes.values()):
            distances = nearest(vectors(embedder, batch), training)
            row[embedder.name] = {
                "median": float(np.median(distances)),
                "held_out_median": float(np.median(real)),
                "ratio_to_held_out": float(np.median(distances) / np.median(real)),
                "share_beyond_held_out_p95": float(np.mean(distances > cut)),
            }
    return rows


def scores(groups: dict[str, np.ndarray], fakes: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    embedder = create_embedder("fidelity", spatial_dims=groups["training"].ndim - 2)
    training, held_out = vectors(embedder, groups["training"]), vectors(embedder, groups["held_out"])
    space = {"name": embedder.name, "fingerprint": embedder.fingerprint}
    out = {}
    for name, batch in fakes.items():
        result = fidelity_audit(vectors(embedder, batch), held_out, training, space, seed=seed)
        out[name] = {"release": name} | {key: value for key, value in result.release.to_dict().items() if key.split("_ci")[0] in (*SCORES, "kid", "fid")}
        baseline = {key: value for key, value in result.baseline.to_dict().items() if key.split("_ci")[0] in (*SCORES, "kid", "fid")}
        out.setdefault("real_baseline", {"release": "real_baseline"} | baseline)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "fidelity.json")
    args = parser.parse_args()
    data = {"phantom_2d": "phantom:2d?patients=60&acquisitions=2&size=64", "phantom_3d": "phantom:3d?patients=24&acquisitions=2&size=32"}
    data.update({name: SHARED / "medmnist" / f"{name}.npz" for name in MEDMNIST if (SHARED / "medmnist" / f"{name}.npz").is_file()})
    out: dict[str, Any] = {
        "benchmark": "fidelity",
        "monai_pso_version": __version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "settings": {"seed": args.seed, "nearest_k": 5, "bootstrap_resamples": 1000, "confidence": 0.95, "medmnist_limits": LIMITS},
        "data_sets": {},
    }
    with cpu_threads(1):
        for name, source in data.items():
            groups = phantom_groups(source) if isinstance(source, str) else medmnist_groups(source)
            fakes = releases(groups, np.random.default_rng(args.seed))
            embedders = [create_embedder("fidelity", spatial_dims=groups["training"].ndim - 2), create_embedder("pixel")]
            out["data_sets"][name] = {
                "source": source if isinstance(source, str) else source.name,
                "images": {group: len(batch) for group, batch in groups.items()},
                "embedders": {e.name: e.settings for e in embedders},
                "separation": separation(groups, fakes, embedders),
                "scores": scores(groups, fakes, args.seed),
            }
            rows = out["data_sets"][name]["scores"]
            print(name, {release: round(row["precision"], 2) for release, row in rows.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
