"""``monai-pso generate``: a guarded release from a trained ldm_2d / ldm_3d bundle.

The bundle folder holds ``configs/`` (the bundle's), ``models/autoencoder.pt`` and ``models/model.pt``
(its training output) and ``privacy/``, the guard folder (``monai-pso guard build SOURCE --out BUNDLE/privacy``,
as the demo does). The release is recorded in the ledger of the guard's primary index. Under ``torchrun``
each rank generates its share of the requests and one release is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from monai_pso.cli.options import threads_option


def release_report(release: Path) -> list[str]:
    """Lines telling where a release is and what the guard did (counts, tau per check, the generator's draws).

    Examples
    --------
    >>> release_report(Path("no/such/release"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    monai_pso.errors.DataSourceError: no/such/release/manifest.json: release manifest not found ...
    """
    from monai_pso.release import open_release

    opened = open_release(release)
    counts, generation = opened.counts, opened.summary.get("generation") or {}
    taus = ", ".join(f"{name} {check['tau']:.4g}" for name, check in opened.summary["checks"].items())
    lines = [
        f"released {counts['released']} of {counts['requested']} requested images ({counts['draws']} draws checked; after every redraw "
        f"{counts['too_close']} too close, {counts['implausible']} implausible)"
    ]
    if generation:
        draws = generation["counts"]
        lines.append(f"draws: rejection rate {generation['rejection_rate']:.1%} ({draws['too_close']} too close, {draws['implausible']} implausible), {draws['regenerated']} redrawn")
    return lines + [
        f"tau: {taus}",
        f"images:    {release / 'images'}",
        f"audit log: {release / 'audit.csv'}  (every draw: {release / 'draws.csv'})" if generation else f"audit log: {release / 'audit.csv'}",
        f"summary:   {release / 'summary.json'}  (histograms: {release / 'distances.png'})",
        f"manifest:  {release / 'manifest.json'}",
    ] + alarm_lines(generation)


def alarm_lines(summary: dict[str, Any]) -> list[str]:
    """The memorization alarm of a guard summary, as a line to print (none when it was not raised).

    Examples
    --------
    >>> alarm_lines({"alarm": {"raised": True, "rate": 0.2}, "too_close_rate": 0.9})
    ['memorization alarm: 90% of the draws were closer than tau to a training image (alarm above 20%): the model may be memorising its training images']
    """
    alarm = summary.get("alarm", {})
    if not alarm.get("raised"):
        return []
    return [
        f"memorization alarm: {summary['too_close_rate']:.0%} of the draws were closer than tau to a training image "
        f"(alarm above {alarm['rate']:.0%}): the model may be memorising its training images"
    ]


@click.command("generate")
@click.option("--bundle", "bundle", required=True, type=click.Path(file_okay=False), help="Trained ldm_2d / ldm_3d bundle folder (configs, models, privacy).")
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Images to request (per condition); with --diversity, the first N training images [default: all].")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Release folder (must not exist or be empty).")
@click.option("--condition", default=None, help="Class label, or a JSON list (covariate vector).")
@click.option("--format", "fmt", type=click.Choice(["png", "nifti", "dicom"]), default=None, help="Image format [default: the bundle's].")
@click.option("--seed", type=int, default=None, help="First seed (sample i uses seed + i).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Denoising steps.")
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale (the start, with --diversity).")
@click.option("--diversity", is_flag=True, help="Diversity-aware scheme: one image per training image, conditioned on its features (a bundle trained with configs/diversity.json).")
@threads_option
def generate(bundle: str, n: int | None, out: str, condition: str | None, fmt: str | None, seed: int | None, steps: int | None, guidance: float | None, diversity: bool, threads: int) -> None:
    """Generate images with the bundle's model; release only those the privacy guard accepts.

    OUT receives images/, audit.csv (one row per requested image), draws.csv (one row per draw),
    summary.json, distances.png and manifest.json, all at once at the end, after the release is
    appended to the ledger of the guard's primary index.
    """
    from monai_pso.engines.bundle_runs import DIVERSITY_CONFIG, run_bundle_generation
    from monai_pso.release.ranks import process_group_from_env, rank_and_world
    from monai_pso.threads import cpu_threads

    if n is None and not diversity:
        raise click.UsageError("give --n (or --diversity for one image per training image)")
    overrides: dict[str, Any] = {"output_dir": str(Path(out).expanduser().resolve())}
    if n is not None:
        overrides["diversity_limit" if diversity else "n"] = n
    if condition is not None:
        if diversity:
            raise click.UsageError("--condition and --diversity exclude each other (--diversity conditions on each training image)")
        try:
            overrides["condition"] = json.loads(condition)
        except ValueError:
            raise click.BadParameter(f"{condition!r} is not a number or a JSON list", param_hint="--condition") from None
    for key, value in (("format", fmt), ("seed", seed), ("num_inference_steps", steps), ("guidance_scale", guidance)):
        if value is not None:
            overrides[key] = value
    with cpu_threads(threads), process_group_from_env():
        release = run_bundle_generation(bundle, overrides, [DIVERSITY_CONFIG] if diversity else [])
        if rank_and_world()[0] != 0:
            return
    for line in release_report(release):
        click.echo(line)
