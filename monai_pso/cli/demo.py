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
import time
from pathlib import Path
from typing import Any

import click

from monai_pso.cli.options import threads_option
from monai_pso.errors import MonaiPsoError

#: Trained this long on 11 patients the model memorises them, so most draws are rejected: 8 draws per
#: request (``attempts_per_level``) before one is dropped. 1500 diffusion steps (500 epochs of 44 images).
DEMO_TRAINING: dict[str, Any] = {
    "max_epochs": 80,
    "adversarial_warmup_epochs": 50,
    "diffusion_max_epochs": 500,
    "attempts_per_level": 8,
    "progress_bar": True,
}


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


@click.command("demo")
@click.option("--data", "source", default="phantom:2d?size=32", show_default=True, help="SOURCE of the training data (its val split calibrates tau).")
@click.option("--out", "out", default="./demo-output", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, type=click.IntRange(min=1), help="Images to request.")
@click.option("--steps", default=25, show_default=True, type=click.IntRange(min=1), help="Denoising steps.")
@threads_option
@click.option("--set", "settings", multiple=True, hidden=True, metavar="KEY=VALUE", help="Override a bundle config value (tests).")
def demo(source: str, out: str, n: int, steps: int, threads: int, settings: tuple[str, ...]) -> None:
    """Train a small LDM, build the two-check guard, calibrate tau and release N guarded synthetic images."""
    from monai_pso.cli.generate import release_report
    from monai_pso.engines.bundle_runs import SMALL_NETWORKS, image_size_of, prepare_bundle, run_bundle_generation, train_bundle
    from monai_pso.guard import build_guard
    from monai_pso.threads import cpu_threads

    start = time.monotonic()
    out_dir = Path(out).expanduser().resolve()
    model, release = out_dir / "model", out_dir / "release"
    if release.exists() or (model / "models").exists():
        raise MonaiPsoError(f"{out_dir}: holds a previous demo; choose another --out")
    settings_ = dict(SMALL_NETWORKS, **DEMO_TRAINING, dataset_source=source, image_size=image_size_of(source), num_inference_steps=steps)
    settings_.update(parse_settings(settings))
    prepare_bundle("ldm_2d", model, settings_)  # the trained bundle describes itself: `monai-pso generate --bundle OUT/model` works
    with cpu_threads(threads):
        click.echo(f"[1/4] training the autoencoder ({settings_['max_epochs']} epochs)")
        click.echo(f"[2/4] then the latent diffusion UNet ({settings_['diffusion_max_epochs']} epochs)")
        train_bundle(model, quiet=True)
        click.echo("[3/4] building the guard: pixel and tile indexes of the training split, tau of each from the val split")
        build_guard(source, model / "privacy")
        click.echo(f"[4/4] generating {n} images through the guard")
        run_bundle_generation(model, {"n": n, "output_dir": str(release)}, quiet=True)
    click.echo(f"done in {time.monotonic() - start:.0f} s")
    for line in release_report(release):
        click.echo(line)
    click.echo(f"ledger:    {model / 'privacy' / 'pixel' / 'index' / 'ledger.jsonl'}")
    click.echo(
        f"next: monai-pso audit {release} --index {model / 'privacy' / 'pixel' / 'index'} "
        f"--holdout '{source}' --control '{source}' --out {out_dir / 'audit'}"
    )
