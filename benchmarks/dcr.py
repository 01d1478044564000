"""DCR holdout test against the full training set: p-values and shares per training size and case.

For each data set and training size (100 holdout images, 100 released images), repeated over random
cohorts drawn from one pool of patients (training, holdout and unseen patients disjoint):

- ``copies``: exact copies of random training images;
- ``near_copies``: copies with Gaussian noise, its standard deviation drawn per image from ``--noise``
  (intensities in [0, 1], clipped), re-embedded;
- ``unseen``: real images of patients in neither training nor the holdout (the null hypothesis holds).

``noise_sweep`` adds near copies with stronger noise (one cohort, the largest training size) to show
where a pixel-space DCR stops telling a re-noised copy from a new image.

Each case records the one-sided Mann-Whitney p-value of :func:`monai_pso.audit.dcr.dcr_test`, the AUC
(released nearer the training set than holdout images), the close share (released images closer than
the holdout's 5th-percentile distance, Clopper-Pearson interval) and the control-based shift check, for
the first repetition in full and as summaries over all repetitions (for ``unseen``: the share of
repetitions with p < 0.05, the test's measured false-positive rate). ``previous_design`` repeats the
copies case with the test this one replaced (each released image's distance to a training subsample of
the holdout's size against its distance to the holdout, exact binomial test of the share closer to
training). ``issue_12`` reruns the measurement of issue 12 (120 exact copies of the PneumoniaMNIST
subset's 2,428 training images, 120 holdout images from ``val``) with both designs.

Data: the embedded phantom (``phantom:2d``, one image per patient, 16 px, pixel embedder on a 12-pixel
grid) for 100, 1,000 and 10,000 training images; the PneumoniaMNIST balanced subset (all splits pooled,
3,166 images, 28 px, the default audit embedder) for 100 and 1,000 when ``shared/data`` is present
(10,000 real images are not available: the subset has 3,166).

Usage::

    python benchmarks/dcr.py                       # ~2-3 min on one core; writes benchmarks/results/dcr.json
    python benchmarks/dcr.py --repeats 10 --out /tmp/dcr.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from math import floor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from monai_pso import __version__
from monai_pso.audit.cohorts import sample_patients
from monai_pso.audit.dcr import DcrResult, dcr_test
from monai_pso.audit.distances import EmbeddedImages, embed_records, nearest
from monai_pso.audit.embedders import default_audit_embedder
from monai_pso.data import ImageRecord, load_image, load_source
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.threads import cpu_threads

SHARED = Path(os.environ.get("MONAI_PSO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
PNEUMONIA = SHARED / "medmnist" / "pneumoniamnist_balanced_subset.npz"
HOLDOUT = RELEASED = CONTROL = 100


def near_copies(records: list[ImageRecord], noise: tuple[float, float], rng: np.random.Generator) -> list[ImageRecord]:
    """Each record re-noised with a standard deviation drawn from ``noise``, as a released image."""
    out = []
    for record in records:
        image = load_image(record)
        noisy = np.clip(image + rng.normal(0.0, rng.uniform(*noise), image.shape), 0.0, 1.0).astype(np.float32)
        out.append(replace(record, item_id=f"near-{record.item_id}", patient_id="synthetic", image=noisy, normalize="none", split=None))
    return out


def previous_design(release: EmbeddedImages, training: EmbeddedImages, holdout: EmbeddedImages, seed: int) -> dict[str, float]:
    """The replaced test: distance to a training subsample with the holdout's patient count vs to the holdout."""
    subsample = training.select_patients(sample_patients(training.patients(), len(holdout.patients()), seed))
    to_training, to_holdout = nearest(release, subsample).distance, nearest(release, holdout).distance
    closer, ties = int((to_training < to_holdout).sum()), int((to_training == to_holdout).sum())
    p_value = float(binomtest(closer + floor(ties / 2), len(release), 0.5, alternative="greater").pvalue)
    return {"share_closer_to_training": (closer + 0.5 * ties) / len(release), "p_value": p_value}


def _figures(result: DcrResult) -> dict[str, Any]:
    return {
        "p_value": result.p_value,
        "auc": result.auc,
        "auc_ci": list(result.auc_ci),
        "close_share": result.close.value,
        "close_share_ci": list(result.close.ci),
        "threshold": result.threshold,
        "null_share": result.null_share,
        "released_at_zero": result.released_at_zero,
        "holdout_at_zero": result.holdout_at_zero,
        "shift_auc": None if result.shift is None else result.shift.auc,
        "shift_p_value": None if result.shift is None else result.shift.p_value,
    }


def _summary(p_values: list[float], close: list[float]) -> dict[str, Any]:
    p = np.asarray(p_values)
    return {
        "repeats": len(p),
        "p_max": float(p.max()),
        "p_median": float(np.median(p)),
        "p_min": float(p.min()),
        "share_p_below_0.05": float((p < 0.05).mean()),
        "share_p_below_1e-6": float((p < 1e-6).mean()),
        "close_share_mean": float(np.mean(close)),
    }


def run_size(
    records: list[ImageRecord], pool: EmbeddedImages, embedder, n_training: int, repeats: int, noise: tuple[float, float], seed: int
) -> dict[str, Any]:
    """All cases for one training size, over ``repeats`` random cohorts of the pool."""
    rng = np.random.default_rng([seed, n_training])
    cases: dict[str, dict[str, Any]] = {}
    p_values: dict[str, list[float]] = {"copies": [], "near_copies": [], "unseen": []}
    close: dict[str, list[float]] = {name: [] for name in p_values}
    previous: list[dict[str, float]] = []
    started = time.perf_counter()
    for repeat in range(repeats):
        order = rng.permutation(len(pool))
        cut = np.cumsum([n_training, HOLDOUT, RELEASED, CONTROL])
        training, holdout, unseen, control = (pool.subset(part) for part in np.split(order, cut)[:4])
        picked = rng.choice(n_training, size=RELEASED, replace=n_training < RELEASED)
        releases = {
            "copies": training.subset(picked),  # an exact copy embeds to the same vectors (deterministic embedder)
            "near_copies": embed_records(near_copies([training.records[i] for i in picked], noise, rng), embedder, 512, "near copies"),
            "unseen": unseen,
        }
        for name, release in releases.items():
            result, _ = dcr_test(release, training, holdout, control, n_resamples=500, seed=repeat)
            p_values[name].append(result.p_value)
            close[name].append(result.close.value)
            if repeat == 0:
                cases[name] = _figures(result)
        previous.append(previous_design(releases["copies"], training, holdout, seed=repeat))
    return {
        "training_images": n_training,
        "holdout_images": HOLDOUT,
        "released_images": RELEASED,
        "control_images": CONTROL,
        "first_repeat": cases,
        "over_repeats": {name: _summary(p_values[name], close[name]) for name in p_values},
        "previous_design_copies": {
            "p_value_first": previous[0]["p_value"],
            "share_first": previous[0]["share_closer_to_training"],
            "p_median": float(np.median([r["p_value"] for r in previous])),
            "share_p_below_0.05": float(np.mean([r["p_value"] < 0.05 for r in previous])),
        },
        "seconds": round(time.perf_counter() - started, 2),
    }


def noise_sweep(pool: EmbeddedImages, embedder, n_training: int, ranges: list[tuple[float, float]], seed: int) -> list[dict[str, Any]]:
    """Near copies with stronger and stronger noise (one random cohort): where the pixel-space test stops seeing them."""
    rng = np.random.default_rng([seed, n_training, 1])
    order = rng.permutation(len(pool))
    cut = np.cumsum([n_training, HOLDOUT, CONTROL])
    training, holdout, control = (pool.subset(part) for part in np.split(order, cut)[:3])
    picked = rng.choice(n_training, size=RELEASED, replace=n_training < RELEASED)
    rows = []
    for noise in ranges:
        release = embed_records(near_copies([training.records[i] for i in picked], noise, rng), embedder, 512, "near copies")
        result, _ = dcr_test(release, training, holdout, control, n_resamples=500, seed=seed)
        rows.append({"noise_std_range": list(noise), "training_images": n_training, **_figures(result)})
    return rows


SWEEP = [(0.005, 0.03), (0.03, 0.06), (0.06, 0.1), (0.1, 0.15)]


def issue_12(embedder) -> dict[str, Any]:
    """Issue 12's measurement: 120 exact copies of 2,428 training images against 120 holdout images."""
    source = load_source(str(PNEUMONIA))
    training_records, val, test = (source.split(s).records for s in ("train", "val", "test"))
    rng = np.random.default_rng(12)
    holdout_records = [val[i] for i in rng.choice(len(val), 120, replace=False)]
    control_records = [test[i] for i in rng.choice(len(test), 120, replace=False)]
    copies = [training_records[i] for i in rng.choice(len(training_records), 120, replace=False)]
    training, holdout, control, release = (
        embed_records(r, embedder, 512) for r in (training_records, holdout_records, control_records, copies)
    )
    result, _ = dcr_test(release, training, holdout, control, n_resamples=1000, seed=0)
    return {"training_images": len(training), "holdout_images": len(holdout), "released_copies": len(release),
            "this_design": _figures(result), "previous_design": previous_design(release, training, holdout, seed=0)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="random cohorts per training size")
    parser.add_argument("--noise", type=float, nargs=2, default=(0.005, 0.03), metavar=("LOW", "HIGH"), help="near-copy noise std range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "dcr.json")
    args = parser.parse_args()
    noise = (float(args.noise[0]), float(args.noise[1]))
    out: dict[str, Any] = {
        "benchmark": "dcr",
        "monai_pso_version": __version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "settings": {"repeats": args.repeats, "noise_std_range": list(noise), "seed": args.seed, "quantile": 0.05, "alternative": "less"},
        "data_sets": {},
    }
    with cpu_threads(1):
        phantom_sizes = (100, 1000, 10000)
        spec = f"phantom:2d?patients={max(phantom_sizes) + HOLDOUT + RELEASED + CONTROL}&acquisitions=1&size=16"
        records = load_source(spec).records
        embedder = PixelEmbedder(grid=12, smoothing=0.5)
        pool = embed_records(records, embedder, 512, "phantom")
        out["data_sets"]["phantom"] = {
            "source": spec,
            "embedder": embedder.settings,
            "sizes": [run_size(records, pool, embedder, n, args.repeats, noise, args.seed) for n in phantom_sizes],
            "noise_sweep": noise_sweep(pool, embedder, max(phantom_sizes), SWEEP, args.seed),
        }
        if PNEUMONIA.is_file():
            records = load_source(str(PNEUMONIA)).records
            embedder = default_audit_embedder(2)
            pool = embed_records(records, embedder, 512, "pneumoniamnist")
            out["data_sets"]["pneumoniamnist_balanced_subset"] = {
                "source": str(PNEUMONIA.name),
                "note": "MedMNIST has no patient ids: each image is its own patient; cohorts are random draws of one pool",
                "embedder": embedder.settings,
                "sizes": [run_size(records, pool, embedder, n, args.repeats, noise, args.seed) for n in (100, 1000)],
                "noise_sweep": noise_sweep(pool, embedder, 1000, SWEEP, args.seed),
            }
            out["issue_12"] = issue_12(embedder)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for name, data in out["data_sets"].items():
        for size in data["sizes"]:
            row = size["over_repeats"]
            print(
                f"{name:32s} n_train={size['training_images']:>6d}  copies p_max={row['copies']['p_max']:.2g}  "
                f"near p_max={row['near_copies']['p_max']:.2g}  unseen p<0.05 in {row['unseen']['share_p_below_0.05']:.0%} "
                f"(first p={size['first_repeat']['unseen']['p_value']:.3f})  previous design copies p_median={size['previous_design_copies']['p_median']:.2g}"
            )
        for row in data["noise_sweep"]:
            print(f"{name:32s} n_train={row['training_images']:>6d}  near copies noise {row['noise_std_range']}: p={row['p_value']:.2g} close share={row['close_share']:.2f}")
    if "issue_12" in out:
        issue = out["issue_12"]
        print(f"issue 12: this design p={issue['this_design']['p_value']:.3g}, previous design p={issue['previous_design']['p_value']:.3g}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
