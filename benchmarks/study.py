"""Real-vs-synthetic study on the shared data; writes ``benchmarks/results/study_cpu.json``.

Experiments: classification on the PneumoniaMNIST subset, BreastMNIST (2D) and AdrenalMNIST3D (3D);
super-resolution 2x and 4x on IXI T1 axial slices; denoising on CT slices of AdrenalMNIST3D_64.
Targets: synthetic-trained AUROC within 1 point of real-trained; synthetic-trained PSNR/SSIM not
significantly worse (one-sided p > 0.05); zero guard violations.

Each experiment needs a guarded synthetic release (``--release NAME=DIR``, made with the generation
workflow from the experiment's train split). Without one, the experiment is reported as skipped, or,
with ``--stand-in``, run with real images of unused patients in place of synthetic ones (labelled so:
this tests the pipeline, not synthetic data).

Usage: ``python benchmarks/study.py [--steps 300] [--limit 400] [--release breastmnist=DIR ...] [--stand-in]``
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from monai_pso.data import DataSource, ImageRecord, load_image, load_source
from monai_pso.downstream.study import StudyConfig, run_study
from monai_pso.downstream.synthetic import ReleaseSynthetic, StandInSynthetic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MEDMNIST = SHARED / "medmnist"

EXPERIMENTS = {
    "pneumoniamnist": ("classification", f"{MEDMNIST}/pneumoniamnist_balanced_subset.npz", {"spatial_dims": 2}),
    "breastmnist": ("classification", f"{MEDMNIST}/breastmnist.npz", {"spatial_dims": 2}),
    "adrenalmnist3d": ("classification", f"{MEDMNIST}/adrenalmnist3d.npz", {"spatial_dims": 3}),
    "ixi_sr2": ("super_resolution", "ixi", {"spatial_dims": 2, "factor": 2, "image_size": 96}),
    "ixi_sr4": ("super_resolution", "ixi", {"spatial_dims": 2, "factor": 4, "image_size": 96}),
    "ct_denoise": ("denoising", "ct", {"spatial_dims": 2, "dose": 0.1, "counts": 1000.0}),
}


def _subset(source: DataSource, limit: int, seed: int = 0) -> DataSource:
    """At most ``limit`` patients per split (a CPU-sized run), keeping the source's patient splits."""
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for split in ("train", "val", "test"):
        patients = source.split(split).patients()
        keep |= set(rng.permutation(patients)[: limit if split == "train" else max(limit // 3, 20)])
    return DataSource([r for r in source if r.patient_id in keep], f"{source.description} [subset {limit}]")


def _slices(source: DataSource, count: int, axis: int) -> DataSource:
    """``count`` central slices along ``axis`` of every volume, as in-memory 2D records of the same patient."""
    records = []
    for record in source:
        volume = load_image(record)[0]
        middle = volume.shape[axis] // 2
        for offset in range(-(count // 2), count - count // 2):
            image = np.take(volume, middle + offset * 2, axis=axis)[None]
            records.append(replace(record, item_id=f"{record.item_id}-s{offset}", image=image.astype(np.float32), normalize="none", spacing=None))
    return DataSource(records, f"{source.description} [{count} slices, axis {axis}]")


def _data(where: str, limit: int) -> DataSource:
    if where == "ixi":
        return _slices(_subset(load_source(f"{SHARED}/ixi_t1_2mm/t1?modality=mri"), limit // 4), 4, axis=2)
    if where == "ct":
        return _slices(_subset(load_source(f"{MEDMNIST}/adrenalmnist3d_64.npz"), limit // 4), 4, axis=2)
    return _subset(load_source(where), limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=400, help="patients in train (a third of that in holdout and test)")
    parser.add_argument("--only", nargs="*", default=list(EXPERIMENTS))
    parser.add_argument("--release", nargs="*", default=[], help="NAME=RELEASE_DIR")
    parser.add_argument("--stand-in", action="store_true", help="use real images of unused patients as a stand-in (pipeline check only)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    releases = dict(item.split("=", 1) for item in args.release)
    out = Path(args.out)
    results = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0], "steps": args.steps, "limit": args.limit, "experiments": {}}
    if not SHARED.is_dir():
        results["skipped"] = f"shared data not found at {SHARED}"
    for name in args.only if SHARED.is_dir() else []:
        task, where, options = EXPERIMENTS[name]
        data = _data(where, args.limit)
        if name in releases:
            provider = ReleaseSynthetic(releases[name])
        elif args.stand_in:
            spare = _data(where, args.limit * 2)
            used = set(data.patients())
            spare_records = [r for r in spare if r.patient_id not in used and r.split == "train"]
            provider = StandInSynthetic(DataSource(spare_records, f"{spare.description} [unused patients]"))  # type: ignore[arg-type]
        else:
            results["experiments"][name] = {"skipped": "no guarded synthetic release given (--release NAME=DIR)"}
            continue
        started = time.time()
        config = StudyConfig(data, task, options, steps=args.steps, batch_size=args.batch_size)  # type: ignore[arg-type]
        report = run_study(config, provider, out / f"study_{name}")
        results["experiments"][name] = {
            "task": task,
            "seconds": round(time.time() - started, 1),
            "stand_in": report["synthetic"]["is_stand_in"],
            "violations": report["guard"]["violations"],
            "arms": report["arms"],
            "comparisons": report["comparisons"],
            "conclusions": report["conclusions"],
        }
        print("\n".join(report["conclusions"]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study_cpu.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
