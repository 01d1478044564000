"""Latent diffusion: training throughput and peak memory, sampling throughput with and without the guard.

Networks are the ``ldm_2d`` / ``ldm_3d`` bundles' own definitions (their configs, with ``--small``
overrides), so both training loops below train exactly the same ``AutoencoderKL`` + ``DiffusionModelUNet``:

- ``plain``: a plain fp32 loop reproducing the MONAI model-zoo ``LDMTrainer``
  (``brats_mri_generative_diffusion/scripts/ldm_trainer.py``): every step encodes the batch through the
  frozen autoencoder inside ``monai.inferers.LatentDiffusionInferer``, adds noise at random timesteps,
  regresses the noise (MSE), Adam step;
- ``monai_pso``: :class:`monai_pso.engines.LatentDiffusionTrainer` as the bundle configures it (latent
  cache, EMA 0.999, bf16 autocast where the device supports it, i.e. CUDA), after one epoch that fills
  the cache.

Sampling: :class:`monai_pso.engines.GenerationWorkflow` (DDIM) alone, and with the default two-check
guard (:func:`monai_pso.guard.build_guard` on a phantom of the same size, into a temporary folder) attached
as a :class:`monai_pso.handlers.PrivacyGuard` (no release is written); images per
second counted over requested images (the untrained model's images all pass, so this is the cost of
checking, not of redrawing).

Throughput: the best of ``--repeat`` runs of ``--iterations`` steps, after a first run that warms up (and
fills the latent cache). Memory, of that first run: on CUDA ``torch.cuda.max_memory_allocated``; on CPU
the peak resident-set growth once the networks and data are built (sampled every 2 ms,
``benchmarks/index.py``'s ``memory``), each training measurement in a fresh process so that freed memory
of an earlier run does not hide growth.

Usage::

    python benchmarks/ldm.py --small                    # CPU, small sizes: benchmarks/results/ldm_cpu.json (~3 min on 2 cores)
    python benchmarks/ldm.py --device cuda              # full size (256^2, 128^3): benchmarks/results/ldm_gpu.json
    python benchmarks/ldm.py --device cpu --iterations 2 --repeat 1 --images 2 --steps 2 --out benchmarks/results/ldm_cpu_fullsize.json
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
RESULTS = Path(__file__).resolve().parent / "results"

#: Per bundle: the config overrides of ``--small`` and of the full size (the CT / MRI presets' sizes:
#: 256 x 256 images with 4 x 64 x 64 latents, 128^3 volumes with 4 x 32^3 latents), the phantom the guard
#: is built on, batch sizes.
SETTINGS: dict[str, dict[str, Any]] = {
    "ldm_2d": {
        "small": {"image_size": [32, 32], "ae_channels": [16, 32], "latent_channels": 2, "norm_num_groups": 8,
                  "unet_channels": [32, 64], "unet_attention_levels": [False, True], "unet_num_head_channels": [0, 32], "unet_num_res_blocks": 1},
        "full": {"image_size": [256, 256]},
        "phantom": "phantom:2d?patients=12&acquisitions=3&size={size}",
        "batch": {"small": 8, "full": 16},
    },
    "ldm_3d": {
        "small": {"image_size": [16, 16, 16], "ae_channels": [8, 16], "latent_channels": 2, "norm_num_groups": 8,
                  "unet_channels": [16, 32], "unet_attention_levels": [False, True], "unet_num_head_channels": [0, 16], "unet_num_res_blocks": 1},
        "full": {"image_size": [128, 128, 128]},
        "phantom": "phantom:3d?patients=8&acquisitions=2&size={size}",
        "batch": {"small": 2, "full": 2},
    },
}


def bundle_networks(bundle: str, small: bool, device: torch.device) -> dict[str, Any]:
    """The bundle's autoencoder, UNet, noise scheduler and image size, built from its configs."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / f) for f in ("train_autoencoder.json", "train_diffusion.json")])
    parser.update({"bundle_root": str(BUNDLES / bundle), "device": device, **SETTINGS[bundle]["small" if small else "full"]})
    return {
        "autoencoder": parser.get_parsed_content("autoencoder_def").to(device).eval(),
        "unet": parser.get_parsed_content("unet_def").to(device),
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


def plain_step(nets: dict[str, Any], optimizer: torch.optim.Optimizer, inferer: Any, images: torch.Tensor) -> float:
    """One step of the model-zoo ``LDMTrainer``: encode in the inferer, noise, MSE on the noise, fp32."""
    noise = torch.randn([images.shape[0], *nets["latent_shape"]], device=images.device)
    timesteps = torch.randint(0, nets["scheduler"].num_train_timesteps, (images.shape[0],), device=images.device).long()
    nets["unet"].train()
    optimizer.zero_grad(set_to_none=False)
    prediction = inferer(inputs=images, autoencoder_model=nets["autoencoder"], diffusion_model=nets["unet"], noise=noise, timesteps=timesteps)
    loss = torch.nn.functional.mse_loss(prediction.float(), noise)
    loss.backward()
    optimizer.step()
    return float(loss)


def training_runner(bundle: str, loop: str, small: bool, device: torch.device, iterations: int):
    """A callable running ``iterations`` training steps of ``loop`` (after its warm-up), and the batch size."""
    from monai.inferers import LatentDiffusionInferer

    from monai_pso.engines import LatentDiffusionTrainer, ema_of

    nets = bundle_networks(bundle, small, device)
    batch = SETTINGS[bundle]["batch"]["small" if small else "full"]
    data = batches(iterations, batch, nets["image_size"], device)
    optimizer = torch.optim.Adam(nets["unet"].parameters(), 1e-4)
    if loop == "plain":
        with torch.no_grad():
            scale = 1.0 / float(nets["autoencoder"].encode_stage_2_inputs(data[0]["image"]).std())
        inferer = LatentDiffusionInferer(nets["scheduler"], scale_factor=scale)
        run = lambda: [plain_step(nets, optimizer, inferer, b["image"]) for b in data]  # noqa: E731
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
    run, batch = training_runner(bundle, loop, small, device, iterations)
    result: dict[str, Any] = {"bundle": bundle, "loop": loop, "batch_size": batch, "iterations": iterations}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run()
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["memory_metric"] = "torch.cuda.max_memory_allocated (networks included)"
    else:
        result["peak_memory_mib"] = memory(run)["rss_growth_mib"]
        result["memory_metric"] = "peak RSS growth during the first steps, networks and data already built (fresh process)"
    # steady state (warm kernels and allocator, and for monai_pso a full latent cache); best of `repeat`
    result["seconds"], _ = timed(lambda: (run(), synchronize(device)), repeat)
    result["repeat"] = repeat
    result["samples_per_s"] = batch * iterations / result["seconds"]
    return result


def measure_sampling(bundle: str, small: bool, device: torch.device, n: int, steps: int) -> dict[str, Any]:
    """Images/s of guarded and unguarded generation of ``n`` images with ``steps`` DDIM steps."""
    from monai.networks.schedulers import DDIMScheduler

    from monai_pso.engines import GenerationWorkflow, LatentDiffusionSampler, generation_requests
    from monai_pso.guard import PrivacyGuard, build_guard

    nets = bundle_networks(bundle, small, device)
    sampler = LatentDiffusionSampler(nets["autoencoder"], nets["unet"], DDIMScheduler(1000), 1.0, nets["latent_shape"], num_inference_steps=steps, device=device)
    batch = SETTINGS[bundle]["batch"]["small" if small else "full"]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        checker = build_guard(SETTINGS[bundle]["phantom"].format(size=nets["image_size"][0]), Path(folder) / "guard", progress=False, n_bootstrap=200)
        guard_build = time.perf_counter() - start
        result = {"bundle": bundle, "images": n, "ddim_steps": steps, "batch_size": batch, "guard_build_seconds": guard_build, "taus": checker.taus}
        sampler([0])  # warm-up
        for guarded in (False, True):
            workflow = GenerationWorkflow(sampler, generation_requests(n), batch_size=batch)
            if guarded:  # the guard's overhead only: checking (and redrawing), no release written
                guard = PrivacyGuard(checker, regenerate=workflow.regenerate, max_attempts=workflow.total_attempts - 1)
                guard.attach(workflow)
            synchronize(device)
            start = time.perf_counter()
            workflow.run()
            synchronize(device)
            seconds = time.perf_counter() - start
            key = "guarded" if guarded else "unguarded"
            result[f"{key}_seconds"] = seconds
            result[f"{key}_images_per_s"] = n / seconds
            if guarded:
                result["guard_counts"] = workflow.state.privacy_summary["counts"]
    result["guard_overhead"] = result["guarded_seconds"] / result["unguarded_seconds"] - 1.0
    return result


def run_phase(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    """One measurement in a fresh process (so memory figures do not inherit an earlier run's heap)."""
    command = [sys.executable, __file__, "--phase", phase, "--device", args.device, "--threads", str(args.threads),
               "--iterations", str(args.iterations), "--repeat", str(args.repeat), "--images", str(args.images), "--steps", str(args.steps)] + (["--small"] if args.small else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def phase_result(args: argparse.Namespace) -> dict[str, Any]:
    kind, bundle, *loop = args.phase.split(":")
    device = torch.device(args.device)
    if kind == "train":
        return measure_training(bundle, loop[0], args.small, device, args.iterations, args.repeat)
    return measure_sampling(bundle, args.small, device, args.images, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="Small networks and images (CPU).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch / faiss CPU threads.")
    parser.add_argument("--iterations", type=int, default=20, help="Timed training steps.")
    parser.add_argument("--repeat", type=int, default=3, help="Timed repetitions of the training steps (the best counts).")
    parser.add_argument("--images", type=int, default=16, help="Images generated per sampling measurement.")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps.")
    parser.add_argument("--bundles", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        with cpu_threads(args.threads):
            print(json.dumps(phase_result(args)))
        return
    training, sampling = [], []
    for bundle in args.bundles:
        for loop in ("plain", "monai_pso"):
            training.append(run_phase(args, f"train:{bundle}:{loop}"))
            print(json.dumps(training[-1]), flush=True)
        plain, ours = training[-2], training[-1]
        ours["speedup_vs_plain"] = ours["samples_per_s"] / plain["samples_per_s"]
        ours["memory_vs_plain"] = ours["peak_memory_mib"] / plain["peak_memory_mib"] if plain["peak_memory_mib"] else None
        sampling.append(run_phase(args, f"sample:{bundle}"))
        print(json.dumps(sampling[-1]), flush=True)
    out = args.out or RESULTS / f"ldm_{'cpu' if args.device == 'cpu' else 'gpu'}.json"
    report = {
        "benchmark": "latent diffusion training (monai_pso vs model-zoo LDMTrainer loop) and guarded sampling",
        "package_version": __version__,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "phase"},
        "training": training,
        "sampling": sampling,
    }
    write_json_atomically(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
