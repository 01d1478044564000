"""``monai-pso study``: train on real, synthetic and real+synthetic data; compare on the real test split."""

from __future__ import annotations

import click

from monai_pso.cli.options import DEFAULT_LDM_STEPS, TASK_MODES, TASKS, threads_option
from monai_pso.errors import MonaiPsoError


def _task_options(task: str, spatial_dims: int, image_size: int | None, num_classes: int, mode: str, network_size: str, dose: float, noise: str, counts: float, factor: int) -> dict:
    options: dict = {"spatial_dims": spatial_dims, "image_size": image_size}
    if task == "classification":
        return options | {"num_classes": num_classes, "mode": mode, "network_size": network_size}
    if task == "denoising":
        return options | {"dose": dose, "noise": noise, "counts": counts}
    return options | {"factor": factor}


def _seed_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """``0,1,2`` -> ``[0, 1, 2]``."""
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 0,1,2") from None


@click.command("study")
@click.option("--data", "data", required=True, help="SOURCE of the real data; its val split is the holdout that calibrates tau.")
@click.option("--task", type=click.Choice(TASKS), required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for report.json, report.md and figures.")
@click.option("--synthetic", "release_dir", default=None, help="Use this guarded release folder (manifest.json) instead of training a generator.")
@click.option("--tau", type=float, default=None, help="The guard's threshold (default: from the release manifest).")
@click.option("--steps", type=int, default=200, show_default=True, help="Optimisation steps, the same for every arm.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the downstream training and the test degradations.")
@click.option("--generator-seeds", default="0", show_default=True, callback=_seed_list,
              help="Comma-separated generator seeds: the generator is trained and sampled once per seed, the synthetic arms trained on each.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--spatial-dims", type=click.Choice(["2", "3"]), default="2", show_default=True)
@click.option("--image-size", type=int, default=None, help="Resize images to this size (needed when real and synthetic sizes differ).")
@click.option("--num-classes", type=int, default=2, show_default=True)
@click.option("--mode", type=click.Choice(TASK_MODES), default="binary", show_default=True)
@click.option("--network-size", type=click.Choice(["small", "121"]), default="small", show_default=True)
@click.option("--dose", type=float, default=0.25, show_default=True, help="Denoising: dose fraction.")
@click.option("--noise", type=click.Choice(["poisson", "gaussian"]), default="poisson", show_default=True)
@click.option("--counts", type=float, default=1e4, show_default=True, help="Denoising: quanta for value 1.0 at full dose.")
@click.option("--factor", type=click.Choice(["2", "4"]), default="2", show_default=True, help="Super-resolution factor.")
@click.option("--ldm-autoencoder-steps", type=click.IntRange(min=1), default=DEFAULT_LDM_STEPS["autoencoder"], show_default=True, help="Generator: autoencoder training steps.")
@click.option("--ldm-diffusion-steps", type=click.IntRange(min=1), default=DEFAULT_LDM_STEPS["diffusion"], show_default=True, help="Generator: diffusion UNet training steps.")
@click.option("--ldm-sampling-steps", type=click.IntRange(min=1), default=25, show_default=True, help="Generator: denoising steps per draw.")
@threads_option
@click.option("--set", "settings", multiple=True, hidden=True, metavar="KEY=VALUE", help="Override a generator bundle config value (tests).")
def study(data, task, out_dir, release_dir, tau, steps, batch_size, learning_rate, seed, generator_seeds, device, spatial_dims, image_size, num_classes, mode, network_size, dose, noise, counts,
          factor, ldm_autoencoder_steps, ldm_diffusion_steps, ldm_sampling_steps, threads, settings) -> None:
    """Does a network trained on the guarded synthetic release do as well on real test data?

    Splits DATA by patient into train / holdout (val) / test; trains a latent diffusion model on train,
    calibrates the guard's tau on the holdout and generates a guarded synthetic set the size of train
    (or reads one given with --synthetic); then trains the task's network on (a) real train, (b) synthetic, (c) real+synthetic with the same
    number of steps, evaluates all three on the real test split and writes report.md / report.json
    with DeLong (AUROC) or paired t / Wilcoxon (PSNR, SSIM) statistics, non-inferiority tests (margins 0.05
    AUROC, 0.5 dB PSNR, 0.01 SSIM), the spread over --generator-seeds and a brute-force guard check.
    """
    from monai_pso.cli.demo import parse_settings
    from monai_pso.downstream.study import StudyConfig, run_study
    from monai_pso.downstream.synthetic import GeneratedSynthetic, ReleaseSynthetic
    from monai_pso.threads import cpu_threads

    if release_dir is not None:
        provider = ReleaseSynthetic(release_dir, tau)
    elif task == "classification" and mode == "multilabel":
        raise MonaiPsoError("--mode multilabel: the generator conditions on one class label; give a guarded release with --synthetic")
    else:
        provider = GeneratedSynthetic(task == "classification", ldm_autoencoder_steps, ldm_diffusion_steps, ldm_sampling_steps, parse_settings(settings))
    options = _task_options(task, int(spatial_dims), image_size, num_classes, mode, network_size, dose, noise, counts, int(factor))
    config = StudyConfig(data, task, options, steps, batch_size, learning_rate, seed, device, generator_seeds=generator_seeds)
    with cpu_threads(threads):
        report = run_study(config, provider, out_dir)
    for line in report["conclusions"]:
        click.echo(line)
    click.echo(f"report: {out_dir}/report.md")
