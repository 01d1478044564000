"""Training throughput of the ldm_2d recipes at MedMNIST size: diffusion on pixels versus on autoencoder latents.

Times the diffusion stage's training step (:class:`monai_pso.engines.LatentDiffusionTrainer`: UNet forward,
backward, Adam, EMA) with the study's small networks (:data:`monai_pso.engines.bundle_runs.SMALL_NETWORKS`) at
28 x 28: in pixel space (:class:`monai_pso.engines.PixelSpace`, a 1 x 28 x 28 UNet input) and in latent space
(the small ``AutoencoderKL``, 2 x 14 x 14 latents, cached as in the bundle). Each repeat runs ``--steps``
steps after one warm-up step; samples/s is ``steps * batch / seconds``. Writes
``benchmarks/results/recipe_throughput_cpu.json``::

    OMP_NUM_THREADS=1 python benchmarks/recipe_throughput.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler
from tqdm import tqdm

from monai_pso.engines import Conditioning, LatentDiffusionTrainer, PixelSpace, ema_of
from monai_pso.engines.bundle_runs import SMALL_NETWORKS
from monai_pso.threads import cpu_threads


def _networks(space: str) -> tuple[torch.nn.Module, DiffusionModelUNet]:
    net = SMALL_NETWORKS
    channels = 1 if space == "pixel" else net["latent_channels"]
    unet = DiffusionModelUNet(
        2, channels, channels, channels=net["unet_channels"], attention_levels=net["unet_attention_levels"], num_head_channels=net["unet_num_head_channels"],
        num_res_blocks=net["unet_num_res_blocks"], norm_num_groups=net["norm_num_groups"], num_class_embeds=3,
    )
    if space == "pixel":
        return PixelSpace(), unet
    autoencoder = AutoencoderKL(2, 1, 1, channels=net["ae_channels"], latent_channels=net["latent_channels"], num_res_blocks=net["ae_num_res_blocks"],
                                norm_num_groups=net["norm_num_groups"], attention_levels=[False] * len(net["ae_channels"]),
                                with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    return autoencoder, unet


def time_training(space: str, size: int, batch_size: int, steps: int) -> float:
    """Seconds of ``steps`` diffusion training steps (after one warm-up step) in ``space`` at ``size`` px."""
    autoencoder, unet = _networks(space)
    batch = {"image": torch.rand(batch_size, 1, size, size), "item_id": [f"i{k}" for k in range(batch_size)], "label": torch.randint(0, 2, (batch_size,))}
    trainer = LatentDiffusionTrainer(
        "cpu", 1, [batch] * (steps + 1), unet, torch.optim.Adam(unet.parameters(), 1e-3), autoencoder, DDPMScheduler(1000),
        scale_factor=1.0 if space == "pixel" else None, conditioning=Conditioning("class", "label", null_class=2), ema=ema_of(unet, 0.99), cache_latents=True,
    )
    marks: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: marks.append(time.perf_counter()))
    trainer.run()
    return marks[-1] - marks[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=SMALL_NETWORKS["batch_size"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "recipe_throughput_cpu.json"))
    args = parser.parse_args()
    results: dict = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "size": args.size, "batch_size": args.batch_size,
                     "steps": args.steps, "repeats": args.repeats, "unet": {k: SMALL_NETWORKS[k] for k in ("unet_channels", "unet_attention_levels", "unet_num_head_channels")}, "spaces": {}}
    with cpu_threads(args.threads):
        runs = [(space, repeat) for repeat in range(args.repeats) for space in ("pixel", "latent")]  # interleaved: load drifts hit both
        for space, _ in tqdm(runs, desc="timing", unit="run"):
            seconds = time_training(space, args.size, args.batch_size, args.steps)
            results["spaces"].setdefault(space, {"samples_per_s": []})["samples_per_s"].append(args.steps * args.batch_size / seconds)
    for entry in results["spaces"].values():
        rates = sorted(entry["samples_per_s"])
        entry["median_samples_per_s"] = rates[len(rates) // 2]
    results["pixel_over_latent"] = results["spaces"]["pixel"]["median_samples_per_s"] / results["spaces"]["latent"]["median_samples_per_s"]
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
