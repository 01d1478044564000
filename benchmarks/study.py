"""Real-vs-synthetic study on the shared data; writes ``benchmarks/results/study_cpu.json``.

Experiments: classification on the PneumoniaMNIST subset, BreastMNIST (2D) and AdrenalMNIST3D (3D);
super-resolution 2x and 4x on IXI T1 axial slices; denoising on CT slices of AdrenalMNIST3D_64 (four
neighbouring slices per volume, or one: ``ct_denoise_one_slice``).
Targets: synthetic-trained AUROC within 1 point of real-trained; synthetic-trained PSNR/SSIM not
significantly worse (one-sided p > 0.05); zero guard violations. Every comparison also carries the
non-inferiority tests (5 AUROC points, 0.5 dB, 0.01 SSIM) and, with ``--generator-seeds 0,1,2``, the
comparison of every seed (``per_seed``) and their spread (``across_seeds``).

Each experiment trains its own generator on its train split (:class:`GeneratedSynthetic`: the small
``ldm_2d`` / ``ldm_3d`` networks, class-conditional for classification), calibrates the guard on the
holdout and generates one guarded image per training image; ``--release NAME=DIR`` uses a finished
release instead, and ``--stand-in`` real images of unused patients (labelled so: this tests the
pipeline, not synthetic data). Work folders (generators, releases, reports) go to ``--work``; the
figures of each finished experiment are merged into ``--out/study_cpu.json`` as it ends.

Usage: ``python benchmarks/study.py [--steps 300] [--limit 400] [--only breastmnist ...] [--generator-seeds 0,1,2] [--work DIR]``
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

from monai_pso.data import DataSource, load_image, load_source
from monai_pso.downstream.study import StudyConfig, run_study
from monai_pso.downstream.synthetic import DEFAULT_LDM_STEPS, GeneratedSynthetic, ReleaseSynthetic, StandInSynthetic
from monai_pso.threads import cpu_threads

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MEDMNIST = SHARED / "medmnist"

EXPERIMENTS = {
    "pneumoniamnist": ("classification", f"{MEDMNIST}/pneumoniamnist_balanced_subset.npz", {"spatial_dims": 2}),
    "breastmnist": ("classification", f"{MEDMNIST}/breastmnist.npz", {"spatial_dims": 2}),
    "adrenalmnist3d": ("classification", f"{MEDMNIST}/adrenalmnist3d.npz", {"spatial_dims": 3}),
    "ixi_sr2": ("super_resolution", "ixi", {"spatial_dims": 2, "factor": 2}),
    "ixi_sr4": ("super_resolution", "ixi", {"spatial_dims": 2, "factor": 4}),
    "ct_denoise": ("denoising", "ct", {"spatial_dims": 2, "dose": 0.1, "counts": 1000.0}),
    "ct_denoise_one_slice": ("denoising", "ct-one-slice", {"spatial_dims": 2, "dose": 0.1, "counts": 1000.0}),
}


def _subset(source: DataSource, limit: int, seed: int = 0) -> DataSource:
    """At most ``limit`` patients per split (a CPU-sized run), keeping the source's patient splits."""
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for split in ("train", "val", "test"):
        patients = source.split(split).patients()
        keep |= set(rng.permutation(patients)[: limit if split == "train" else max(limit // 3, 20)])
    return DataSource([r for r in source if r.patient_id in keep], f"{source.description} [subset {limit}]")


def _slices(source: DataSource, count: int, axis: int, size: int) -> DataSource:
    """``count`` slices around the middle along ``axis`` of every volume, resized to ``size`` x ``size`` (area),
    as in-memory 2D records of the same patient (so the guard's same-patient distances see them)."""
    import torch
    import torch.nn.functional as F

    records = []
    for record in source:
        volume = load_image(record)[0]
        middle = volume.shape[axis] // 2
        for offset in range(-(count // 2), count - count // 2):
            image = torch.as_tensor(np.take(volume, middle + offset * 2, axis=axis)[None, None].copy())
            image = F.interpolate(image, size=(size, size), mode="area")[0].numpy().astype(np.float32)
            records.append(replace(record, item_id=f"{record.item_id}-s{offset}", image=image, normalize="none", spacing=None))
    return DataSource(records, f"{source.description} [{count} slices, axis {axis}, {size}x{size}]")


def _data(where: str, limit: int) -> DataSource:
    if where == "ixi":
        return _slices(_subset(load_source(f"{SHARED}/ixi_t1_2mm/t1?modality=mri"), limit // 4), 4, axis=2, size=64)
    if where == "ct":
        return _slices(_subset(load_source(f"{MEDMNIST}/adrenalmnist3d_64.npz"), limit // 4), 4, axis=2, size=64)
    if where == "ct-one-slice":  # no same-patient pairs: tau from the held-out distances alone
        return _slices(_subset(load_source(f"{MEDMNIST}/adrenalmnist3d_64.npz"), limit), 1, axis=2, size=64)
    return _subset(load_source(where), limit)


def _provider(name: str, task: str, where: str, data: DataSource, args: argparse.Namespace):
    if name in args.releases:
        return ReleaseSynthetic(args.releases[name])
    if args.stand_in:
        spare = _data(where, args.limit * 2)
        used = set(data.patients())
        spare_records = [r for r in spare if r.patient_id not in used and r.split == "train"]
        return StandInSynthetic(DataSource(spare_records, f"{spare.description} [unused patients]"))  # type: ignore[arg-type]
    settings = {"attempts_per_level": args.attempts} if args.attempts else {}
    candidates = args.candidates if task == "classification" else 1
    steps = (args.ldm_autoencoder_steps, args.ldm_diffusion_steps, args.ldm_sampling_steps)
    return GeneratedSynthetic(task == "classification", *steps, settings, candidates=candidates, selection_steps=args.selection_steps)


def _summary(report: dict, seconds: float) -> dict:
    guard = report["guard"]
    return {
        "task": report["task"],
        "seconds": round(seconds, 1),
        "data": report["data"],
        "synthetic": report["synthetic"],
        "guard": {"tau": guard["tau"], "rejection_rate": guard.get("rejection_rate"), "counts": guard.get("counts"), "violations": guard["violations"], "per_seed": guard["per_seed"]},
        "arms": report["arms"],
        "arms_per_seed": report["arms_per_seed"],
        "comparisons": report["comparisons"],
        "conclusions": report["conclusions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=400, help="patients in train (a third of that in holdout and test)")
    parser.add_argument("--only", nargs="*", default=list(EXPERIMENTS))
    parser.add_argument("--release", nargs="*", default=[], help="NAME=RELEASE_DIR")
    parser.add_argument("--stand-in", action="store_true", help="use real images of unused patients as a stand-in (pipeline check only)")
    parser.add_argument("--ldm-autoencoder-steps", type=int, default=DEFAULT_LDM_STEPS["autoencoder"])
    parser.add_argument("--ldm-diffusion-steps", type=int, default=DEFAULT_LDM_STEPS["diffusion"])
    parser.add_argument("--ldm-sampling-steps", type=int, default=25)
    parser.add_argument("--generator-seeds", type=lambda value: [int(v) for v in value.split(",")], default=[0], help="comma-separated generator seeds, e.g. 0,1,2")
    parser.add_argument("--attempts", type=int, default=None, help="draws per requested image before it is dropped [default: the bundle's 4]")
    parser.add_argument("--candidates", type=int, default=1, help="classification: draws per training image, the best released one kept (candidate selection)")
    parser.add_argument("--selection-steps", type=int, default=200, help="training steps of candidate selection's classifier on real train")
    parser.add_argument("--results-name", default="study_cpu.json", help="results file in --out (a new name keeps study_cpu.json)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=str(Path(__file__).parent / "runs"), help="generators, releases and reports (not committed)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    args.releases = dict(item.split("=", 1) for item in args.release)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / args.results_name
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"experiments": {}}
    results.update(machine=platform.processor() or platform.machine(), python=sys.version.split()[0], threads=args.threads)
    if not SHARED.is_dir():
        results["skipped"] = f"shared data not found at {SHARED}"
    for name in args.only if SHARED.is_dir() else []:
        task, where, options = EXPERIMENTS[name]
        data = _data(where, args.limit)
        settings = {"steps": args.steps, "batch_size": args.batch_size, "limit": args.limit, "ldm_steps": [args.ldm_autoencoder_steps, args.ldm_diffusion_steps],
                    "ldm_sampling_steps": args.ldm_sampling_steps, "attempts": args.attempts or 4, "generator_seeds": args.generator_seeds,
                    "candidates": args.candidates if task == "classification" else 1}
        started = time.time()
        config = StudyConfig(data, task, options, steps=args.steps, batch_size=args.batch_size, generator_seeds=args.generator_seeds)  # type: ignore[arg-type]
        with cpu_threads(args.threads):
            report = run_study(config, _provider(name, task, where, data, args), Path(args.work) / name)
        results["experiments"][name] = {"settings": settings, **_summary(report, time.time() - started)}
        results_file.write_text(json.dumps(results, indent=2, default=str))
        print(f"[{name}]", *report["conclusions"], sep="\n", flush=True)


if __name__ == "__main__":
    main()
