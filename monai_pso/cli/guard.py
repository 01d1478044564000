"""``monai-pso guard build``: the guard folder every release command accepts (``gate --guard``, bundles)."""

from __future__ import annotations

from pathlib import Path

import click

from monai_pso.cli.options import SPLITS, threads_option


@click.group()
def guard() -> None:
    """Build the privacy guard of a training set."""


@guard.command("build")
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Guard folder to write (guard.json and one folder per check).")
@click.option("--split", default="train", show_default=True, type=click.Choice(SPLITS), help="The split the guard protects (indexed in full).")
@click.option("--holdout", default=None, help="SOURCE of held-out patients for calibrating tau [default: SOURCE].")
@click.option("--holdout-split", default="val", show_default=True, type=click.Choice(SPLITS), help="Split of the held-out patients.")
@click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True, type=click.IntRange(min=10), help="Patient-bootstrap resamples of each tau's interval.")
@click.option("--keep-ledger", is_flag=True, help="Replacing a guard: carry its release ledger into the new one.")
@click.option("--accept-utility-cost", is_flag=True, help="Accept a tau that refuses more than half of the held-out real images.")
@click.option("--no-plausibility", "no_plausibility", is_flag=True, help="Leave out the plausibility check (draws farther from the real data than held-out real images are: implausible).")
@click.option(
    "--identity",
    default="auto",
    show_default=True,
    help="Identity (re-identification) check: auto (when training patients have two or more images), xray (the shipped chest X-ray network), none, or a trained embedder folder.",
)
@threads_option
def build(
    source: str,
    out: Path,
    split: str,
    holdout: str | None,
    holdout_split: str,
    n_bootstrap: int,
    keep_ledger: bool,
    accept_utility_cost: bool,
    no_plausibility: bool,
    identity: str,
    threads: int,
) -> None:
    """Index every image of SOURCE's split with each default check and calibrate its tau on held-out patients.

    The checks: whole-image pixel distance (copies, shifted, turned, re-exposed, noisy copies) and
    tiles (a copied region pasted into another image). An image is released only when it passes all,
    and (unless --no-plausibility) lies no farther from the training images, in a fidelity embedding,
    than the held-out real images do (the radius refusing at most 5% of them). The identity check
    (--identity) measures whether its network tells patients apart on the held-out patients and says
    whether identity is certified.
    """
    from monai_pso.guard import build_guard, read_guard
    from monai_pso.guard.identity import describe_identity
    from monai_pso.threads import cpu_threads

    with cpu_threads(threads):
        checker = build_guard(
            source, out, split=split, holdout=holdout, holdout_split=holdout_split, keep_ledger=keep_ledger, n_bootstrap=n_bootstrap, accept_utility_cost=accept_utility_cost,
            plausibility=not no_plausibility, identity=identity,
        )
    for check in checker.checks:
        low, high = check.threshold.interval
        threshold = check.threshold
        click.echo(f"{check.name}: {check.index.n_items} training images indexed; tau {check.tau:.4g} ({threshold.confidence:.0%} CI [{low:.4g}, {high:.4g}])")
        same = "tau_same applied" if threshold.same_applied else "tau_same not applied"
        auc = "" if threshold.verification is None else f"same-vs-different-patient AUC {threshold.verification.value:.3g}; "
        click.echo(f"  {auc}{same}; utility cost {threshold.utility_cost:.1%} of held-out real images refused")
    left_out = read_guard(out).get("plausibility")  # None with --no-plausibility, else why it was left out
    click.echo(checker.plausibility.radius.describe() if checker.plausibility is not None else f"plausibility: not checked ({(left_out or {}).get('reason', '--no-plausibility')})")
    click.echo(describe_identity(checker.identity))
    click.echo(f"guard: {Path(out).resolve()}  (guard.json)")
    click.echo(f"use:   monai-pso gate CANDIDATES --guard {out} --out RELEASE_DIR")
