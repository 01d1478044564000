"""Small trained weights for every shipped bundle, trained briefly on the phantom with one CPU thread.

Each bundle is trained on its own default ``dataset_source`` (the phantom, so nothing is downloaded and the
shipped guard protects exactly the images the shipped model saw) at the network sizes its configs define:

- ``ldm_2d`` / ``ldm_3d``: the autoencoder (``train_autoencoder.json``) and the diffusion UNet
  (``train_diffusion.json``), then the default guard folder ``privacy/`` is built on the same phantom
  (:func:`monai_pso.guard.build_guard`). Shipped: ``models/autoencoder.pt`` (``{"autoencoder": ...}``),
  ``models/model.pt`` (``{"ema": ..., "trainer": ...}``: the EMA weights of ``network_def`` that
  ``inference.json`` loads, and the trainer state that holds the latent scale factor), ``privacy/``.
  Measured: the autoencoder's reconstruction of the val split (L1, PSNR), the diffusion objective
  (noise-prediction MSE) on the val split's latents at random timesteps, and an out-of-the-box guarded
  generation (``python -m monai.bundle run --config_file configs/inference.json`` in a copy).
- ``classification`` / ``denoising`` / ``super_resolution``: ``train.json`` for ``--steps`` steps;
  shipped: ``models/model.pt`` (the network's state dict); measured: the val metrics that ``train.json``
  writes (``metrics_val.json``).

Optimiser and discriminator states are not shipped (they only matter to resume training), which keeps
every weights file under 2 MB (the guard folders hold 2 MB in 2D, 7.5 MB in 3D). The script writes ``benchmarks/results/bundle_weights.json``, the bundles'
``models/`` (and ``privacy/``), the measured figures into each ``configs/metadata.json``
(``eval_metrics``, ``shipped_weights``) and the "Shipped weights" section of each ``docs/README.md``.

Usage::

    python benchmarks/bundle_weights.py                       # every bundle: about 22 min on one thread of a busy 2-core machine
    python benchmarks/bundle_weights.py --guard-only          # the LDM guards and generations again (about 6 min), after a guard change
    python benchmarks/bundle_weights.py --bundles denoising --steps 50 --bundles-dir /tmp/copy --out /tmp/w.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from monai_pso import __version__
from monai_pso.io import write_json_atomically
from monai_pso.threads import cpu_threads

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bundle_weights.json"
LDM_BUNDLES = ("ldm_2d", "ldm_3d")
DOWNSTREAM_BUNDLES = ("classification", "denoising", "super_resolution")

#: Optimisation steps per LDM bundle and stage: minutes on one busy CPU thread. Far fewer than the ~1500 diffusion
#: steps the 2D UNet needs to draw phantom-like images: these weights show that the bundle runs, not what it can learn.
LDM_STEPS = {"ldm_2d": {"autoencoder": 120, "diffusion": 360}, "ldm_3d": {"autoencoder": 60, "diffusion": 150}}

#: Marks around the generated section of a bundle's ``docs/README.md``.
README_START, README_END = "<!-- shipped-weights:start -->", "<!-- shipped-weights:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", nargs="+", default=[*LDM_BUNDLES, *DOWNSTREAM_BUNDLES], choices=[*LDM_BUNDLES, *DOWNSTREAM_BUNDLES])
    parser.add_argument("--bundles-dir", type=Path, default=ROOT / "bundles", help="folder of the bundles that receive the weights")
    parser.add_argument("--steps", type=int, default=200, help="training steps of the downstream bundles")
    parser.add_argument("--ldm-scale", type=float, default=1.0, help="multiplies the LDM steps of LDM_STEPS (quick checks)")
    parser.add_argument("--images", type=int, default=4, help="images requested in the out-of-the-box LDM generation")
    parser.add_argument("--guard-only", action="store_true", help="rebuild the LDM guards and rerun their generation only, keeping the weights and --out's records")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def file_sizes(folder: Path) -> dict[str, int]:
    """Bytes of every file under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def bundle_parser(bundle: Path, names: tuple[str, ...]):
    """A ``ConfigParser`` of the bundle's merged configs, rooted at the bundle (no ``ConfigWorkflow`` here)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / name) for name in names])
    parser.update({"bundle_root": str(bundle), "device": "$torch.device('cpu')"})
    return parser


def val_batch(parser) -> torch.Tensor:
    """The preprocessed val split of the bundle's ``dataset_source``, stacked ``(N, 1, *spatial)``."""
    from monai_pso.engines.bundle import datalist

    transform = parser.get_parsed_content("preprocessing")
    entries = datalist(parser.get_parsed_content("dataset_source"), "val", parser.get_parsed_content("modality"))
    return torch.stack([torch.as_tensor(transform(dict(entry))["image"]) for entry in entries])


@torch.no_grad()
def ldm_metrics(bundle: Path, seed: int = 0) -> dict[str, float]:
    """Autoencoder reconstruction of the val split (L1, PSNR) and the diffusion objective on its latents."""
    from monai_pso.engines import load_weights, read_scale_factor

    parser = bundle_parser(bundle, ("train_autoencoder.json", "train_diffusion.json", "inference.json"))
    images = val_batch(parser)
    autoencoder = parser.get_parsed_content("autoencoder").eval()
    unet = load_weights(parser.get_parsed_content("network_def"), bundle / "models" / "model.pt", "ema").eval()
    scheduler = parser.get_parsed_content("noise_scheduler")
    reconstruction = autoencoder.reconstruct(images).clamp(0, 1)
    mse = torch.mean((reconstruction - images) ** 2, dim=tuple(range(1, images.ndim)))
    latents = autoencoder.encode_stage_2_inputs(images) * read_scale_factor(bundle / "models" / "model.pt")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.num_train_timesteps, (len(latents),), generator=generator)
    prediction = unet(scheduler.add_noise(latents, noise, timesteps), timesteps)
    return {
        "val_images": len(images),
        "autoencoder_val_l1": float(torch.mean(torch.abs(reconstruction - images))),
        "autoencoder_val_psnr_db": float(torch.mean(10 * torch.log10(1.0 / mse.clamp_min(1e-10)))),
        "diffusion_val_noise_mse": float(torch.mean((prediction - noise) ** 2)),
    }


def ship_ldm_weights(trained: Path, shipped: Path) -> None:
    """Write the inference-only checkpoints of ``trained/models`` into ``shipped/models``."""
    from monai_pso.engines import load_checkpoint

    models = shipped / "models"
    models.mkdir(parents=True, exist_ok=True)
    autoencoder = load_checkpoint(trained / "models" / "autoencoder.pt")
    diffusion = load_checkpoint(trained / "models" / "model.pt")
    torch.save({"autoencoder": autoencoder["autoencoder"]}, models / "autoencoder.pt")
    torch.save({"ema": diffusion["ema"], "trainer": diffusion["trainer"]}, models / "model.pt")


def out_of_the_box_generation(shipped: Path, work: Path, images: int, threads: int) -> dict[str, Any]:
    """Run ``configs/inference.json`` alone in a copy of the shipped bundle, as a user would; the release's counts."""
    copy = work / "out-of-the-box"
    shutil.copytree(shipped, copy)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--n", str(images)]
    started = time.perf_counter()
    subprocess.run(command, cwd=copy, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    summary = json.loads((copy / "release" / "summary.json").read_text())
    return {"command": " ".join(command[1:]), "requested": images, "counts": summary["counts"], "seconds": round(time.perf_counter() - started, 1)}


def train_ldm(name: str, shipped: Path, work: Path, scale: float) -> dict[str, Any]:
    """Train both stages of an LDM bundle and ship the weights; the measured record."""
    from monai_pso.engines.bundle import datalist
    from monai_pso.engines.bundle_runs import epochs_for, prepare_bundle, train_bundle

    steps = {stage: max(2, round(count * scale)) for stage, count in LDM_STEPS[name].items()}
    trained = prepare_bundle(name, work / name, {})  # the shipped bundle's configs, without its weights
    settings = json.loads((trained / "configs" / "train_autoencoder.json").read_text())
    source, batch_size = settings["dataset_source"], settings["batch_size"]
    n_train = len(datalist(source, "train"))
    runtime = {
        "max_epochs": epochs_for(steps["autoencoder"], n_train, batch_size),
        "diffusion_max_epochs": epochs_for(steps["diffusion"], n_train, batch_size),
        "progress_bar": True,
    }
    started = time.perf_counter()
    train_bundle(trained, runtime, quiet=True)
    seconds = time.perf_counter() - started
    ship_ldm_weights(trained, shipped)
    per_epoch = math.ceil(n_train / batch_size)
    return {
        "data": f"{source} (train split, {n_train} images)",
        "steps": {"autoencoder": runtime["max_epochs"] * per_epoch, "diffusion": runtime["diffusion_max_epochs"] * per_epoch},
        "batch_size": batch_size,
        "training_seconds": round(seconds, 1),
        "metrics": ldm_metrics(shipped),
    }


def guard_ldm(shipped: Path, work: Path, images: int, threads: int) -> dict[str, Any]:
    """Build the shipped default guard ``privacy/`` on the bundle's ``dataset_source`` and generate out of the box."""
    from monai_pso.guard import build_guard

    source = json.loads((shipped / "configs" / "inference.json").read_text())["dataset_source"]
    shutil.rmtree(shipped / "privacy", ignore_errors=True)
    started = time.perf_counter()
    checker = build_guard(source, shipped / "privacy", progress=True)
    return {
        "guard": {"data": source, "checks": [check.name for check in checker.checks], "seconds": round(time.perf_counter() - started, 1)},
        "generation": out_of_the_box_generation(shipped, work, images, threads),
    }


def train_downstream(name: str, shipped: Path, work: Path, steps: int) -> dict[str, Any]:
    """Run the bundle's ``train.json`` for ``steps`` steps and ship its ``model.pt``; the measured record."""
    from monai.bundle import run

    configs = shipped / "configs"
    output = work / name
    started = time.perf_counter()
    run(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"), logging_file=str(configs / "logging.conf"),
        output_dir=str(output), num_steps=steps, progress_bar=True)
    seconds = time.perf_counter() - started
    (shipped / "models").mkdir(exist_ok=True)
    shutil.copy2(output / "model.pt", shipped / "models" / "model.pt")
    settings = json.loads((configs / "train.json").read_text())
    metrics = json.loads((output / "metrics_val.json").read_text())
    return {
        "data": f"{settings['dataset_source']} (train split; metrics on the val split)",
        "steps": {"network": steps},
        "batch_size": settings["batch_size"],
        "training_seconds": round(seconds, 1),
        "metrics": headline_metrics(metrics),
    }


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of a ``metrics_val.json`` (means of PSNR / SSIM / RMSE, accuracy, AUROC)."""
    headline: dict[str, float] = {"val_images": metrics["n"]}
    for key in ("psnr", "ssim", "rmse"):
        if isinstance(metrics.get(key), dict):
            headline[f"val_{key}"] = round(float(metrics[key]["mean"]), 4)
    if "accuracy" in metrics:
        headline["val_accuracy"] = round(float(metrics["accuracy"]), 4)
    if isinstance(metrics.get("auroc"), dict):
        headline["val_auroc"] = round(float(metrics["auroc"]["auroc"]), 4)
    return headline


def record_in_bundle(shipped: Path, record: dict[str, Any], results: Path) -> None:
    """Write ``record`` into the bundle's ``configs/metadata.json`` and the generated section of its ``docs/README.md``."""
    metadata_file = shipped / "configs" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["eval_metrics"] = {key: value for key, value in record["metrics"].items() if key != "val_images"}
    metadata["shipped_weights"] = {
        "files": record["files"],
        "data": record["data"],
        "steps": record["steps"],
        "batch_size": record["batch_size"],
        "training_seconds": record["training_seconds"],
        "results_file": results_name(results),
        "note": "small demonstration weights on the phantom; retrain on your data for real use",
    }
    metadata_file.write_text(json.dumps(metadata, indent=4) + "\n")
    readme = shipped / "docs" / "README.md"
    text = readme.read_text()
    if README_START not in text:
        raise SystemExit(f"{readme}: no '{README_START}' line to write the shipped weights after")
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1] if README_END in rest else rest
    readme.write_text(before + README_START + "\n" + readme_section(record, results) + README_END + after)


def results_name(results: Path) -> str:
    return results.relative_to(ROOT).as_posix() if results.is_relative_to(ROOT) else str(results)


def readme_section(record: dict[str, Any], results: Path) -> str:
    """The Markdown of a bundle's shipped weights: files, data, steps, time, metrics and where they come from."""
    files = ", ".join(f"`{path}` ({size / 1e6:.2f} MB)" for path, size in record["files"].items() if path.startswith("models/"))
    steps = ", ".join(f"{stage} {count}" for stage, count in record["steps"].items())
    metrics = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in record["metrics"].items())
    lines = [
        f"Files: {files}. Trained on {record['data']}, batch {record['batch_size']}, steps: {steps}, "
        f"{record['training_seconds']:.0f} s with {record['threads']} CPU thread(s).",
        f"Measured: {metrics}." + (" (A UNet that predicts no noise scores a noise MSE of 1.0.)" if "diffusion_val_noise_mse" in record["metrics"] else ""),
    ]
    if "generation" in record:
        counts = record["generation"]["counts"]
        lines.append(
            f"Out of the box (`{record['generation']['command']}` in an exported copy, with the shipped guard `privacy/`, checks "
            f"{', '.join(record['guard']['checks'])}): "
            f"{counts['released']} of {record['generation']['requested']} requested images released, {record['generation']['seconds']:.0f} s."
        )
    lines.append(f"Written by `benchmarks/bundle_weights.py` ({results_name(results)}). Demonstration weights: retrain on your data for real use.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    previous = json.loads(args.out.read_text())["bundles"] if args.out.is_file() else {}
    records: dict[str, Any] = {name: previous[name] for name in args.bundles if args.guard_only and name in previous}
    with cpu_threads(args.threads), tempfile.TemporaryDirectory(prefix="bundle-weights-") as scratch:
        if not args.guard_only:  # first every bundle's weights, recorded before any guard is built
            for name in tqdm(args.bundles, desc="training bundles", unit="bundle"):
                work = Path(scratch) / name
                work.mkdir()
                torch.manual_seed(0)
                shipped = args.bundles_dir / name
                records[name] = train_ldm(name, shipped, work, args.ldm_scale) if name in LDM_BUNDLES else train_downstream(name, shipped, work, args.steps)
                records[name]["threads"] = args.threads
                records[name]["files"] = {path: size for path, size in file_sizes(shipped).items() if path.startswith("models/")}
            write_results(args, {**previous, **records})
        for name in [name for name in args.bundles if name in LDM_BUNDLES]:
            if name not in records:
                raise SystemExit(f"{args.out}: no trained record of {name}; run without --guard-only first")
            work = Path(scratch) / f"{name}-guard"
            work.mkdir()
            records[name].update(guard_ldm(args.bundles_dir / name, work, args.images, args.threads))
    return write_results(args, {**previous, **records})


def write_results(args: argparse.Namespace, records: dict[str, Any]) -> dict[str, Any]:
    """Write the results file and every record of ``args.bundles`` into its bundle; the results."""
    results = {
        "monai_pso": __version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": args.threads,
        "bundles": records,
    }
    write_json_atomically(args.out, results, indent=2)
    for name in args.bundles:
        record_in_bundle(args.bundles_dir / name, records[name], args.out)
    return results


if __name__ == "__main__":
    main()
