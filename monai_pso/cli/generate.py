"""``monai-pso generate``: a guarded release from a trained ldm_2d / ldm_3d bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from monai_pso.errors import MonaiPsoError

#: Config files of a bundle's guarded generation, merged in this order (model-zoo style).
GENERATION_CONFIGS = ("train_autoencoder.json", "train_diffusion.json", "inference.json")


def run_bundle_generation(bundle: str | Path, overrides: dict) -> Path:
    """Run a bundle's ``inference.json`` (guarded generation) with ``overrides``; returns the release folder.

    Examples
    --------
    >>> run_bundle_generation("no/such/bundle", {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    monai_pso.errors.MonaiPsoError: no/such/bundle: not a bundle (no configs/inference.json)
    """
    from monai.bundle import ConfigParser

    root = Path(bundle)
    files = [root / "configs" / name for name in GENERATION_CONFIGS]
    if not all(f.is_file() for f in files):
        raise MonaiPsoError(f"{bundle}: not a bundle (no configs/inference.json)")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(root.resolve()), **overrides})
    try:
        for index in range(len(parser["run"])):
            parser.get_parsed_content(f"run#{index}")
    except RuntimeError as error:  # ConfigExpression wraps user errors; show them as one line
        cause = error.__cause__
        while cause is not None and not isinstance(cause, MonaiPsoError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    return Path(parser.get_parsed_content("output_dir"))


@click.command("generate")
@click.option("--bundle", "bundle", required=True, type=click.Path(file_okay=False), help="Trained ldm_2d / ldm_3d bundle folder.")
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Images to release (per condition).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Release folder (must not exist or be empty).")
@click.option("--condition", default=None, help="Class label, or a JSON list (covariate vector).")
@click.option("--format", "fmt", type=click.Choice(["png", "nifti", "dicom"]), default=None, help="Image format (bundle default).")
@click.option("--seed", type=int, default=None, help="First seed (sample i uses seed + i).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Denoising steps.")
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale.")
def generate(bundle: str, n: int, out: str, condition: str | None, fmt: str | None, seed: int | None, steps: int | None, guidance: float | None) -> None:
    """Generate N images with the bundle's model; release only those the privacy guard accepts."""
    overrides = {"n": n, "output_dir": str(Path(out).resolve())}
    if condition is not None:
        overrides["condition"] = json.loads(condition)
    for key, value in (("format", fmt), ("seed", seed), ("num_inference_steps", steps), ("guidance_scale", guidance)):
        if value is not None:
            overrides[key] = value
    release = run_bundle_generation(bundle, overrides)
    manifest = json.loads((release / "manifest.json").read_text())
    click.echo(f"released {manifest['n_released']} of {n} images to {release}")
    click.echo(f"audit log: {release / 'audit.csv'}")
