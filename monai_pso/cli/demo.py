"""``monai-pso demo``: the whole pipeline on a small dataset in a few minutes on a CPU.

Trains a tiny 2D latent diffusion model with the ``ldm_2d`` bundle, builds the exact reference index of
the training images, calibrates tau on held-out patients, and generates a guarded release.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from monai_pso.errors import MonaiPsoError

#: Tiny networks and short schedules: about 5 minutes on 2 CPU cores at 32x32.
DEMO_OVERRIDES = {
    "image_size": [32, 32],
    "batch_size": 16,
    "max_epochs": 15,
    "adversarial_warmup_epochs": 10,
    "ae_channels": [16, 32],
    "latent_channels": 2,
    "ae_num_res_blocks": 1,
    "norm_num_groups": 8,
    "disc_channels": 16,
    "disc_layers": 2,
    "lr": 1e-3,
    "diffusion_lr": 1e-3,
    "diffusion_max_epochs": 25,
    "unet_channels": [32, 64],
    "unet_attention_levels": [False, True],
    "unet_num_head_channels": [0, 32],
    "unet_num_res_blocks": 1,
    "ema_decay": 0.99,
}


def bundle_template(name: str = "ldm_2d") -> Path:
    """The bundle shipped with the source checkout (``bundles/NAME``)."""
    path = Path(__file__).resolve().parents[2] / "bundles" / name
    if not (path / "configs").is_dir():
        raise MonaiPsoError(f"{path}: bundle not found (the demo runs from a source checkout of monai-pso)")
    return path


@click.command("demo")
@click.option("--data", "source", default="phantom:2d?size=32", show_default=True, help="SOURCE of the training data.")
@click.option("--out", "out", default="./demo-output", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, type=click.IntRange(min=1), help="Images to release.")
@click.option("--steps", default=25, show_default=True, type=click.IntRange(min=1), help="Denoising steps.")
def demo(source: str, out: str, n: int, steps: int) -> None:
    """Train a small LDM, build the index, calibrate tau and release N guarded synthetic images."""
    from monai.bundle import run

    from monai_pso.calibrate import calibrate_threshold
    from monai_pso.cli.generate import run_bundle_generation
    from monai_pso.embed import PixelEmbedder
    from monai_pso.index import build_index

    start = time.monotonic()
    out_dir = Path(out).resolve()
    model = out_dir / "model"
    if (out_dir / "release").exists():
        raise MonaiPsoError(f"{out_dir / 'release'}: exists; choose another --out")
    shutil.copytree(bundle_template(), model, dirs_exist_ok=True)
    overrides = dict(DEMO_OVERRIDES, dataset_source=source, bundle_root=str(model))
    configs = [str(model / "configs" / f) for f in ("train_autoencoder.json", "train_diffusion.json")]
    click.echo("[1/4] training the autoencoder")
    run(config_file=configs[:1], **overrides)
    click.echo("[2/4] training the latent diffusion UNet")
    run(config_file=configs, **overrides)
    click.echo("[3/4] building the reference index and calibrating tau")
    embedder = PixelEmbedder()
    index = build_index(source, embedder, "train")
    index.save(model / "privacy" / "index")
    calibrate_threshold(index, embedder, source, split="val").save(model / "privacy" / "threshold.json")
    click.echo("[4/4] generating the guarded release")
    release = run_bundle_generation(model, dict(overrides, n=n, num_inference_steps=steps, output_dir=str(out_dir / "release")))
    click.echo(f"done in {time.monotonic() - start:.0f} s")
    click.echo(f"images:    {release}")
    click.echo(f"audit log: {release / 'audit.csv'}")
    click.echo(f"manifest:  {release / 'manifest.json'}")
