"""Latent diffusion: training throughput and peak memory, sampling throughput with and without the guard.

Networks are the ``ldm_2d`` / ``ldm_3d`` bundles' own definitions (their configs, with ``--small``
overrides), so the three training loops below train exactly the same ``AutoencoderKL`` + ``DiffusionModelUNet``:

- ``plain``: the MONAI model-zoo ``LDMTrainer`` loop (``brats_mri_generative_diffusion/scripts/ldm_trainer.py``)
  as the bundle runs it: every step encodes the batch through the frozen autoencoder inside
  ``monai.inferers.LatentDiffusionInferer``, adds noise at random timesteps, regresses the noise (MSE), Adam
  step, with the zoo's AMP (``torch.cuda.amp`` autocast float16 and a gradient scaler) on CUDA; on a CPU
  the zoo has no AMP, so it runs fp32 (``amp: false`` in the results);
- ``latents``: precomputed latents, MAISI's way: the data encoded once before training (timed apart,
  ``encode_once_seconds``), then the same noise regression on the stored latents, AMP as ``plain``;
- ``monai_pso``: :class:`monai_pso.engines.LatentDiffusionTrainer` as the bundle configures it (latent
  cache, EMA 0.999, bf16 autocast where the device supports it, i.e. CUDA), after one epoch that fills
  the cache.

Sampling: :class:`monai_pso.engines.GenerationWorkflow` (DDIM, ``--steps`` 25 and 50 by default) alone, and
with the default guard (:func:`monai_pso.guard.build_guard` on a phantom of the same size, into a temporary
folder: the pixel, copy and plausibility checks, the phantom's 21 held-out images enough for the last) attached as a :class:`monai_pso.handlers.PrivacyGuard` (no release is written); images per second
counted over requested images (the untrained model's images all pass, so this is the cost of checking, not
of redrawing).

Throughput: the best of ``--repeat`` runs of ``--iterations`` steps (each run's time is recorded), after a
first run that warms up (and fills the latent cache). Memory, of that first run: on CUDA ``torch.cuda.max_memory_allocated``; on CPU
the peak resident-set growth once the networks and data are built (sampled every 2 ms,
``benchmarks/index.py``'s ``memory``), each training measurement in a fresh process so that freed memory
of an earlier run does not hide growth.

Usage::

    python benchmarks/ldm.py --small                    # CPU, small sizes: benchmarks/results/ldm_cpu.json
    python benchmarks/ldm.py --phases sampling          # CPU, full size: benchmarks/results/ldm_cpu_fullsize.json
    python benchmarks/ldm.py --device cuda              # full size (256^2, 128^3): benchmarks/results/ldm_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from monai_pso import __version__
from monai_pso.io import write_json_atomically
from monai_pso.threads import cpu_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index import memory, timed  # noqa: E402 (the index benchmark's RSS sampler and best-of-n timer)

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
#: Training loops compared: the model-zoo loop, the precomputed-latents baseline, the package's trainer.
LOOPS = ("plain", "latents", "monai_pso")
RESULTS = Path(__file__).resolve().parent / "results"

#: Per bundle: the config overrides of ``--small`` and of the full size (the CT / MRI presets' sizes:
#: 256 x 256 images with 4 x 64 x 64 latents, 128^3 volumes with 4 x 32^3 latents), the phantom the guard
#: is built on, batch sizes. The small 2D size keeps the latent space (``latent_space``; the bundle would
#: diffuse 32-pixel images on the pixels), so both sizes measure the latent diffusion path.
SETTINGS: dict[str, dict[str, Any]] = {
    "ldm_2d": {
        "small": {"image_size": [32, 32], "ae_channels": [16, 32], "latent_channels": 2, "norm_num_groups": 8,
                  "unet_channels": [32, 64], "unet_attention_levels": [False, True], "unet_num_head_channels": [0, 32], "unet_num_res_blocks": 1, "latent_space": True},
        "full": {"image_size": [256, 256]},
        "phantom": "phantom:2d?patients=50&acquisitions=3&size={size}",
        "batch": {"small": 8, "full": 16},
    },
    "ldm_3d": {
        "small": {"image_size": [16, 16, 16], "ae_channels": [8, 16], "latent_channels": 2, "norm_num_groups": 8,
                  "unet_channels": [16, 32], "unet_attention_levels": [False, True], "unet_num_head_channels": [0, 16], "unet_num_res_blocks": 1},
        "full": {"image_size": [128, 128, 128]},
        "phantom": "phantom:3d?patients=50&acquisitions=3&size={size}",
        "batch": {"small": 2, "full": 2},
    },
}


def bundle_networks(bundle: str, small: bool, device: torch.device, side: int | None = None) -> dict[str, Any]:
    """The bundle's autoencoder, UNet, noise scheduler and image size, built from its configs (full size:
    ``side`` pixels per axis instead of the presets' when given)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / f) for f in ("train_autoencoder.json", "train_diffusion.json")])
    overrides = SETTINGS[bundle]["small" if small else "full"]
    if side and not small:
        overrides = {"image_size": [side] * len(overrides["image_size"])}
    parser.update({"bundle_root": str(BUNDLES / bundle), "device": device, **overrides})
    return {
        "autoencoder": parser.get_parsed_content("autoencoder_def").to(device).eval(),
        "unet": parser.get_parsed_content("network_def").to(device),
        "scheduler": parser.get_parsed_content("noise_scheduler"),
        "image_size": list(parser.get_parsed_content("image_size")),
        "latent_shape": [parser["latent_channels"]] + [s // 2 ** (len(parser["ae_channels"]) - 1) for s in parser.get_parsed_content("image_size")],
    }


def batches(n: int, batch: int, image_size: list[int], device: torch.device) -> list[dict[str, Any]]:
    """``n`` batches of random images with distinct item ids (what the latent cache keys on)."""
    generator = torch.Generator().manual_seed(0)
    return [
        {"image": torch.rand(batch, 1, *image_size, generator=generator).to(device), "item_id": [f"i{k}-{j}" for j in range(batch)]}
        for k in range(n)
    ]


def amp_step(optimizer: torch.optim.Optimizer, scaler: Any, device: torch.device, forward) -> float:
    """One optimiser step of ``forward()`` (which returns the loss) as the model zoo runs it: autocast and a
    gradient scaler on CUDA (``torch.cuda.amp``, float16), plain fp32 on a CPU (the zoo has no CPU AMP)."""
    optimizer.zero_grad(set_to_none=False)
    with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        loss = forward()
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return float(loss)


def plain_step(nets: dict[str, Any], optimizer: torch.optim.Optimizer, scaler: Any, inferer: Any, images: torch.Tensor) -> float:
    """One step of the model-zoo ``LDMTrainer``: encode in the inferer, noise, MSE on the noise (AMP on CUDA)."""
    noise = torch.randn([images.shape[0], *nets["latent_shape"]], device=images.device)
    timesteps = torch.randint(0, nets["scheduler"].num_train_timesteps, (images.shape[0],), device=images.device).long()
    nets["unet"].train()

    def forward() -> torch.Tensor:
        prediction = inferer(inputs=images, autoencoder_model=nets["autoencoder"], diffusion_model=nets["unet"], noise=noise, timesteps=timesteps)
        return torch.nn.functional.mse_loss(prediction.float(), noise.float())

    return amp_step(optimizer, scaler, images.device, forward)


def latent_step(nets: dict[str, Any], optimizer: torch.optim.Optimizer, scaler: Any, latents: torch.Tensor) -> float:
    """One step on precomputed (scaled) latents, MAISI's way: noise, UNet, MSE on the noise (AMP on CUDA)."""
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, nets["scheduler"].num_train_timesteps, (latents.shape[0],), device=latents.device).long()
    nets["unet"].train()

    def forward() -> torch.Tensor:
        noisy = nets["scheduler"].add_noise(original_samples=latents, noise=noise, timesteps=timesteps)
        return torch.nn.functional.mse_loss(nets["unet"](noisy, timesteps=timesteps).float(), noise)

    return amp_step(optimizer, scaler, latents.device, forward)


def training_runner(bundle: str, loop: str, small: bool, device: torch.device, iterations: int, encode_seconds: list[float]):
    """A callable running ``iterations`` training steps of ``loop`` (after its warm-up), and the batch size;
    ``latents`` appends the time of encoding the data once to ``encode_seconds``."""
    from monai.inferers import LatentDiffusionInferer

    from monai_pso.engines import LatentDiffusionTrainer, ema_of

    nets = bundle_networks(bundle, small, device)
    batch = SETTINGS[bundle]["batch"]["small" if small else "full"]
    data = batches(iterations, batch, nets["image_size"], device)
    optimizer = torch.optim.Adam(nets["unet"].parameters(), 1e-4)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    with torch.no_grad():
        scale = 1.0 / float(nets["autoencoder"].encode_stage_2_inputs(data[0]["image"]).std())
    if loop == "plain":
        inferer = LatentDiffusionInferer(nets["scheduler"], scale_factor=scale)
        run = lambda: [plain_step(nets, optimizer, scaler, inferer, b["image"]) for b in data]  # noqa: E731
    elif loop == "latents":
        start = time.perf_counter()
        with torch.no_grad():
            latents = [nets["autoencoder"].encode_stage_2_inputs(b["image"]) * scale for b in data]
        synchronize(device)
        encode_seconds.append(time.perf_counter() - start)
        run = lambda: [latent_step(nets, optimizer, scaler, z) for z in latents]  # noqa: E731
    else:
        trainer = LatentDiffusionTrainer(device, 1, data, nets["unet"], optimizer, nets["autoencoder"], nets["scheduler"],
                                         ema=ema_of(nets["unet"], 0.999), cache_latents=True)
        run = trainer.run
    return run, batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(bundle: str, loop: str, small: bool, device: torch.device, iterations: int, repeat: int) -> dict[str, Any]:
    """Peak memory of the first ``iterations`` steps (which also warm up), then samples/s: the best of ``repeat`` runs of as many more."""
    encode_seconds: list[float] = []
    run, batch = training_runner(bundle, loop, small, device, iterations, encode_seconds)
    result: dict[str, Any] = {"bundle": bundle, "loop": loop, "batch_size": batch, "iterations": iterations, "amp": device.type == "cuda"}
    if encode_seconds:
        result["encode_once_seconds"] = encode_seconds[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run()
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["memory_metric"] = "torch.cuda.max_memory_allocated (networks included)"
    else:
        result["peak_memory_mib"] = memory(run)["rss_growth_mib"]
        result["memory_metric"] = "peak RSS growth during the first steps, networks and data already built (fresh process)"
    # steady state (warm kernels and allocator, and for monai_pso a full latent cache); each of `repeat` runs recorded
    result["seconds_per_repeat"] = [timed(lambda: (run(), synchronize(device)), 1)[0] for _ in range(repeat)]
    result["seconds"] = min(result["seconds_per_repeat"])
    result["repeat"] = repeat
    result["samples_per_s"] = batch * iterations / result["seconds"]
    return result


class Stopwatch:
    """``function`` with the seconds spent in it summed in ``seconds``."""

    def __init__(self, function: Any) -> None:
        self.function, self.seconds = function, 0.0

    def __call__(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.function(*args)
        finally:
            self.seconds += time.perf_counter() - start


def measure_sampling(bundle: str, small: bool, device: torch.device, n: int, steps: list[int], side: int | None = None) -> list[dict[str, Any]]:
    """Per DDIM step count: images/s of unguarded and guarded generation of ``n`` images (one guard built once);
    from ignite's ``HandlersTimeProfiler``, the seconds in the sampling iterations and in the guard's handler.
    The handler's seconds include its redraws' sampling (timed apart, ``redraw_sampling_seconds``), so the
    guard's own cost is the rest (``guard_check_seconds``), and ``guard_share_of_sampling`` is that over all
    sampling, redraws included: the overhead apart from the machine's load, which the wall times include."""
    from ignite.handlers import HandlersTimeProfiler
    from monai.networks.schedulers import DDIMScheduler

    from monai_pso.engines import GenerationWorkflow, LatentDiffusionSampler, generation_requests
    from monai_pso.guard import PrivacyGuard, build_guard

    nets = bundle_networks(bundle, small, device, side)
    batch = SETTINGS[bundle]["batch"]["small" if small else "full"]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        checker = build_guard(SETTINGS[bundle]["phantom"].format(size=nets["image_size"][0]), Path(folder) / "guard", progress=False, n_bootstrap=200)
        guard_build = time.perf_counter() - start
        for count in steps:
            sampler = LatentDiffusionSampler(nets["autoencoder"], nets["unet"], DDIMScheduler(1000), 1.0, nets["latent_shape"], num_inference_steps=count, device=device)
            LatentDiffusionSampler(nets["autoencoder"], nets["unet"], DDIMScheduler(1000), 1.0, nets["latent_shape"], num_inference_steps=1, device=device)([0])  # warm-up
            result = {"bundle": bundle, "image_size": nets["image_size"], "images": n, "ddim_steps": count, "batch_size": batch, "guard_build_seconds": guard_build, "taus": checker.taus,
                      "plausibility_check": checker.plausibility is not None}
            for guarded in (False, True):
                workflow = GenerationWorkflow(sampler, generation_requests(n), batch_size=batch)
                redraws = Stopwatch(workflow.regenerate)
                if guarded:  # the guard's overhead only: checking (and redrawing), no release written
                    guard = PrivacyGuard(checker, regenerate=redraws, max_attempts=workflow.total_attempts - 1)
                    guard.attach(workflow)
                profiler = HandlersTimeProfiler()  # ignite's: time in each handler, apart from the sampling iterations
                profiler.attach(workflow)
                synchronize(device)
                start = time.perf_counter()
                workflow.run()
                synchronize(device)
                seconds = time.perf_counter() - start
                key = "guarded" if guarded else "unguarded"
                result[f"{key}_seconds"] = seconds
                result[f"{key}_images_per_s"] = n / seconds
                profile = {row[0]: row[2] for row in profiler.get_results() if isinstance(row[2], float)}
                result[f"{key}_sampling_seconds"] = profile.get("Processing", 0.0)
                if guarded:
                    result["guard_counts"] = workflow.state.privacy_summary["counts"]
                    result["guard_handler_seconds"] = sum(t for name, t in profile.items() if "PrivacyGuard" in name)
                    result["redraw_sampling_seconds"] = redraws.seconds
            result["guard_overhead"] = result["guarded_seconds"] / result["unguarded_seconds"] - 1.0  # wall: load noise included
            result["guard_check_seconds"] = result["guard_handler_seconds"] - result["redraw_sampling_seconds"]
            result["guard_share_of_sampling"] = result["guard_check_seconds"] / (result["guarded_sampling_seconds"] + result["redraw_sampling_seconds"])
            result["guard_seconds_per_image"] = result["guard_check_seconds"] / result["guard_counts"]["checks"]  # per image checked
            results.append(result)
    return results


def run_phase(args: argparse.Namespace, phase: str) -> Any:
    """One measurement in a fresh process (so memory figures do not inherit an earlier run's heap)."""
    command = [sys.executable, __file__, "--phase", phase, "--device", args.device, "--threads", str(args.threads),
               "--iterations", str(args.iterations), "--repeat", str(args.repeat), "--images", str(args.images), "--steps", args.steps,
               "--image-side", str(args.image_side or 0)] + (["--small"] if args.small else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def phase_result(args: argparse.Namespace) -> dict[str, Any] | list[dict[str, Any]]:
    kind, bundle, *loop = args.phase.split(":")
    device = torch.device(args.device)
    if kind == "train":
        return measure_training(bundle, loop[0], args.small, device, args.iterations, args.repeat)
    return measure_sampling(bundle, args.small, device, args.images, [int(s) for s in args.steps.split(",")], args.image_side or None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="Small networks and images (CPU).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch / faiss CPU threads.")
    parser.add_argument("--iterations", type=int, default=10, help="Timed training steps (at least 10).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed repetitions of the training steps (the best counts).")
    parser.add_argument("--images", type=int, default=16, help="Images generated per sampling measurement.")
    parser.add_argument("--steps", default="25,50", help="DDIM step counts of the sampling measurements, comma-separated.")
    parser.add_argument("--bundles", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--image-side", type=int, default=None, help="Full size: this many pixels per axis instead of the presets' (256^2, 128^3); sampling only.")
    parser.add_argument("--phases", nargs="+", default=["training", "sampling"], choices=["training", "sampling"], help="What to measure.")
    parser.add_argument("--out", type=Path, default=None, help="Default: results/ldm_cpu.json (--small), ldm_cpu_fullsize.json (CPU, full size), ldm_gpu.json.")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        with cpu_threads(args.threads):
            print(json.dumps(phase_result(args)))
        return
    training, sampling = [], []
    for bundle in args.bundles:
        if "training" in args.phases:
            for loop in LOOPS:
                training.append(run_phase(args, f"train:{bundle}:{loop}"))
                print(json.dumps(training[-1]), flush=True)
            plain, latents, ours = training[-3:]
            for baseline in (plain, latents):
                ours[f"speedup_vs_{baseline['loop']}"] = ours["samples_per_s"] / baseline["samples_per_s"]
                ours[f"memory_vs_{baseline['loop']}"] = ours["peak_memory_mib"] / baseline["peak_memory_mib"] if baseline["peak_memory_mib"] else None
        if "sampling" in args.phases:
            sampling.extend(run_phase(args, f"sample:{bundle}"))
            print(json.dumps(sampling[-2:]), flush=True)
    out = args.out or RESULTS / ("ldm_gpu.json" if args.device != "cpu" else "ldm_cpu.json" if args.small else "ldm_cpu_fullsize.json")
    write_json_atomically(out, merged_report(out, args, training, sampling))
    print(f"wrote {out}")


def merged_report(out: Path, args: argparse.Namespace, training: list[dict[str, Any]], sampling: list[dict[str, Any]]) -> dict[str, Any]:
    """The report of this run, keeping the rows ``out`` already holds for the bundles and phases it did not
    measure; ``settings_by_run`` says which settings each ``phase:bundle`` was measured under."""
    earlier = json.loads(out.read_text()) if out.exists() else {}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "phase"}
    measured = {f"{phase}:{bundle}" for phase in args.phases for bundle in args.bundles}
    kept = {phase: [r for r in earlier.get(phase, []) if f"{phase}:{r['bundle']}" not in measured] for phase in ("training", "sampling")}
    runs = {f"{phase}:{r['bundle']}" for phase, rows in kept.items() for r in rows}
    by_run = {run: earlier.get("settings_by_run", {}).get(run, earlier.get("settings")) for run in runs}
    return {
        "benchmark": "latent diffusion training (monai_pso vs model-zoo LDMTrainer loop) and guarded sampling",
        "package_version": __version__,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"},
        "settings_by_run": {**by_run, **{run: settings for run in measured}},
        "training": kept["training"] + training,
        "sampling": kept["sampling"] + sampling,
    }


if __name__ == "__main__":
    main()
