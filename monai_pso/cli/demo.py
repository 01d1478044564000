"""``monai-pso demo``: the whole pipeline on a small dataset in a few minutes on a CPU.

Trains a small 2D latent diffusion model with the ``ldm_2d`` bundle on 200 phantom patients, builds the
default guard (whole-image and tile pixel indexes of the training split, tau of each calibrated on the
val split's held-out patients, and the plausibility check), generates a guarded release, recorded in
the ledger of the primary index, and draws the overview picture::

    OUT/model/                  the trained bundle: configs/, models/, privacy/ (the guard folder)
    OUT/release/                images/, audit.csv, draws.csv, summary.json, distances.png, manifest.json
    OUT/release.overview.png    owner-only, beside the release: released images over their nearest training
                                images, refused draws (drawn again from their seeds) with the reason
    OUT/release.salt, OUT/release.items.csv   the release's private salt and id map
    OUT/demo.json               the run: source, settings, seconds per stage

It prints the ``monai-pso audit`` command to run next (as it can be pasted).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import click

from monai_pso.cli.options import threads_option
from monai_pso.errors import MonaiPsoError

#: The demo's data: 200 phantom patients with 2 acquisitions each, 32 x 32 (140 training patients, 280
#: images; 30 held-out patients calibrate tau and the plausibility radius). 11 training patients (the
#: earlier default) were memorised: the guard refused most draws and passed blurred failures.
DEMO_SOURCE = "phantom:2d?size=32&patients=200&acquisitions=2"

#: The demo's recipe, chosen by measurement (``docs/ldm.md#the-demo``): the small networks of
#: :data:`~monai_pso.engines.bundle_runs.SMALL_NETWORKS` (a 16 x 16 x 2 latent), the autoencoder 360 steps
#: and the diffusion UNet 1440 steps (80 epochs of 280 images in batches of 16) on :data:`DEMO_SOURCE`;
#: in trial runs 1980 diffusion steps drew no better images, 1080 drew less realistic ones, and an 8 x 8 x 4
#: latent drew more near-copies. ``latent_space`` keeps the LDM at 32 px: below the bundle's ``latent_min_size``
#: (64) it would diffuse on the pixels, whose UNet does 4 times the work per step here (16 x 16 latents
#: against 32 x 32 pixels).
DEMO_TRAINING: dict[str, Any] = {
    "latent_space": True,
    "max_epochs": 20,
    "adversarial_warmup_epochs": 12,
    "diffusion_max_epochs": 80,
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
@click.option("--data", "source", default=DEMO_SOURCE, show_default=True, help="SOURCE of the training data (its val split calibrates tau).")
@click.option("--out", "out", default="./demo-output", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, type=click.IntRange(min=1), help="Images to request.")
@click.option("--steps", default=25, show_default=True, type=click.IntRange(min=1), help="Denoising steps.")
@threads_option
@click.option("--set", "settings", multiple=True, hidden=True, metavar="KEY=VALUE", help="Override a bundle config value (tests).")
def demo(source: str, out: str, n: int, steps: int, threads: int, settings: tuple[str, ...]) -> None:
    """Train a small LDM, build the guard, release N guarded synthetic images and draw their overview picture."""
    from monai_pso.cli.generate import release_report
    from monai_pso.data import load_source
    from monai_pso.engines.bundle_runs import SMALL_NETWORKS, generation_parser, image_size_of, prepare_bundle, run_bundle_generation, train_bundle
    from monai_pso.guard import build_guard
    from monai_pso.io import write_json_atomically
    from monai_pso.release.overview import refused_draws, write_overview
    from monai_pso.threads import cpu_threads

    out_dir = Path(out).expanduser().resolve()
    model, release = out_dir / "model", out_dir / "release"
    if release.exists() or (model / "models").exists():
        raise MonaiPsoError(f"{out_dir}: holds a previous demo; choose another --out")
    settings_ = dict(SMALL_NETWORKS, **DEMO_TRAINING, dataset_source=source, image_size=image_size_of(source), num_inference_steps=steps)
    settings_.update(parse_settings(settings))
    prepare_bundle("ldm_2d", model, settings_)  # the trained bundle describes itself: `monai-pso generate --bundle OUT/model` works
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage], clock = round(time.monotonic() - clock, 1), time.monotonic()

    with cpu_threads(threads):
        click.echo(f"[1/5] training the autoencoder ({settings_['max_epochs']} epochs)")
        click.echo(f"[2/5] then the latent diffusion UNet ({settings_['diffusion_max_epochs']} epochs)")
        train_bundle(model, quiet=True)
        lap("training")
        click.echo("[3/5] building the guard: pixel and tile indexes of the training split, tau of each and the plausibility radius from the val split")
        checker = build_guard(source, model / "privacy")
        lap("guard")
        click.echo(f"[4/5] generating {n} images through the guard")
        run_bundle_generation(model, {"n": n, "output_dir": str(release)}, quiet=True)
        lap("generation")
        click.echo("[5/5] the overview picture: released images, refused draws drawn again, each over its nearest training image")
        workflow = generation_parser(model, {"n": n}).get_parsed_content("workflow")
        overview = write_overview(release, checker, load_source(source).split("train"), refused_draws(release, workflow))
        lap("overview")
    total = sum(seconds.values())
    write_json_atomically(out_dir / "demo.json", {"source": source, "n": n, "num_inference_steps": steps, "threads": threads, "seconds": round(total, 1), "stage_seconds": seconds})
    click.echo(f"done in {total:.0f} s (" + ", ".join(f"{stage} {value:.0f} s" for stage, value in seconds.items()) + ")")
    for line in release_report(release):
        click.echo(line)
    click.echo(f"overview:  {overview}  (owner-only: it shows training images)")
    click.echo(f"ledger:    {model / 'privacy' / 'pixel' / 'index' / 'ledger.jsonl'}")
    audit = ["monai-pso", "audit", str(release), "--index", str(model / "privacy" / "pixel" / "index"), "--holdout", source, "--control", source, "--out", str(out_dir / "audit")]
    click.echo(f"next: {shlex.join(audit)}")
