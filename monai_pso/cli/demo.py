"""``monai-pso demo``: the whole pipeline on a small dataset in a few minutes on a CPU.

Trains a tiny 2D latent diffusion model with the ``ldm_2d`` bundle, builds the default two-check guard
(whole-image and tile pixel indexes of the training split, tau of each calibrated on the val split's
held-out patients), and generates a guarded release, recorded in the ledger of the primary index::

    OUT/model/            the trained bundle: configs/, models/, privacy/{pixel,pixel-tiles}/{index,threshold.json}
    OUT/release/          images/, audit.csv, summary.json, distances.png, manifest.json
    OUT/release.salt      the private salt of the audit log's patient hashes
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import click

from monai_pso.errors import MonaiPsoError

#: Small networks for 32x32 images on 2 CPU cores (about 4 minutes). The diffusion UNet needs about
#: 1500 steps (500 epochs of 44 images) to draw phantom-like images; fewer give noise that the guard
#: passes. Trained this long on 11 patients it memorises them, so most draws are rejected: 8 draws per
#: request (``attempts_per_level``) before one is dropped.
DEMO_OVERRIDES: dict[str, Any] = {
    "batch_size": 16,
    "max_epochs": 80,
    "adversarial_warmup_epochs": 50,
    "ae_channels": [16, 32],
    "latent_channels": 2,
    "ae_num_res_blocks": 1,
    "norm_num_groups": 8,
    "disc_channels": 16,
    "disc_layers": 2,
    "lr": 1e-3,
    "diffusion_lr": 1e-3,
    "diffusion_max_epochs": 500,
    "unet_channels": [32, 64],
    "unet_attention_levels": [False, True],
    "unet_num_head_channels": [0, 32],
    "unet_num_res_blocks": 1,
    "ema_decay": 0.99,
    "attempts_per_level": 8,
}


def bundle_template(name: str = "ldm_2d") -> Path:
    """The bundle shipped with the source checkout (``bundles/NAME``)."""
    path = Path(__file__).resolve().parents[2] / "bundles" / name
    if not (path / "configs").is_dir():
        raise MonaiPsoError(f"{path}: bundle not found (the demo runs from a source checkout of monai-pso)")
    return path


def configure_bundle(bundle: str | Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` into a bundle's own config files, so that every later run of it (training,
    ``monai-pso generate``, ``python -m monai.bundle run``) builds the same networks.

    Each key is set in the last generation config that defines it (later files override earlier ones
    when merged); a new key goes into ``train_autoencoder.json``.

    Examples
    --------
    >>> import tempfile
    >>> bundle = Path(tempfile.mkdtemp()) / "ldm_2d"; _ = shutil.copytree(bundle_template(), bundle)
    >>> configure_bundle(bundle, {"ae_channels": [8, 8], "num_inference_steps": 10})
    >>> json.loads((bundle / "configs" / "inference.json").read_text())["num_inference_steps"]
    10
    """
    from monai_pso.cli.generate import GENERATION_CONFIGS

    files = [Path(bundle) / "configs" / name for name in GENERATION_CONFIGS]
    configs = {path: json.loads(path.read_text()) for path in files}
    for key, value in settings.items():
        target = next((path for path in reversed(files) if key in configs[path]), files[0])
        configs[target][key] = value
    for path, config in configs.items():
        path.write_text(json.dumps(config, indent=4) + "\n")


def parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` config overrides; values are read as JSON when they parse, as strings otherwise.

    Examples
    --------
    >>> parse_settings(("max_epochs=2", "image_size=[16, 16]", "dataset_source=phantom:2d"))
    {'max_epochs': 2, 'image_size': [16, 16], 'dataset_source': 'phantom:2d'}
    """
    parsed = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{setting!r}: expected KEY=VALUE", param_hint="--set")
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return parsed


def image_size_of(source: str) -> list[int]:
    """The spatial size of the first image of ``source``: the model generates at the size the guard indexes."""
    from monai_pso.data import load_image, load_source

    records = load_source(source).split("train")
    if not len(records):
        raise MonaiPsoError(f"{source}: no training images")
    return [int(s) for s in load_image(records[0]).shape[1:]]


@click.command("demo")
@click.option("--data", "source", default="phantom:2d?size=32", show_default=True, help="SOURCE of the training data (its val split calibrates tau).")
@click.option("--out", "out", default="./demo-output", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, type=click.IntRange(min=1), help="Images to request.")
@click.option("--steps", default=25, show_default=True, type=click.IntRange(min=1), help="Denoising steps.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads of torch and faiss.")
@click.option("--set", "settings", multiple=True, hidden=True, metavar="KEY=VALUE", help="Override a bundle config value (tests).")
def demo(source: str, out: str, n: int, steps: int, threads: int, settings: tuple[str, ...]) -> None:
    """Train a small LDM, build the two-check guard, calibrate tau and release N guarded synthetic images."""
    from monai.bundle import run

    from monai_pso.cli.generate import cpu_threads, release_report, run_bundle_generation
    from monai_pso.guard import build_default_guard

    start = time.monotonic()
    out_dir = Path(out).expanduser().resolve()
    model, release = out_dir / "model", out_dir / "release"
    if release.exists() or (model / "models").exists():
        raise MonaiPsoError(f"{out_dir}: holds a previous demo; choose another --out")
    overrides = dict(DEMO_OVERRIDES, dataset_source=source, image_size=image_size_of(source), num_inference_steps=steps)
    overrides.update(parse_settings(settings))
    shutil.copytree(bundle_template(), model, dirs_exist_ok=True)
    configure_bundle(model, overrides)  # the trained bundle describes itself: `monai-pso generate --bundle OUT/model` works
    configs = [str(model / "configs" / f) for f in ("train_autoencoder.json", "train_diffusion.json")]
    with cpu_threads(threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="parsing config_file", category=UserWarning)  # our own bundle's configs
        click.echo(f"[1/4] training the autoencoder ({overrides['max_epochs']} epochs)")
        run(config_file=configs[:1])
        click.echo(f"[2/4] training the latent diffusion UNet ({overrides['diffusion_max_epochs']} epochs)")
        run(config_file=configs)
        click.echo("[3/4] building the guard: pixel and tile indexes of the training split, tau of each from the val split")
        build_default_guard(source, split="val", out_dir=model / "privacy")
        click.echo(f"[4/4] generating {n} images through the guard")
        run_bundle_generation(model, {"n": n, "output_dir": str(release)})
    click.echo(f"done in {time.monotonic() - start:.0f} s")
    for line in release_report(release):
        click.echo(line)
    click.echo(f"ledger:    {model / 'privacy' / 'pixel' / 'index' / 'ledger.jsonl'}")
    click.echo(
        f"next: monai-pso audit {release} --index {model / 'privacy' / 'pixel' / 'index'} "
        f"--holdout '{source}' --control '{source}' --out {out_dir / 'audit'}"
    )
