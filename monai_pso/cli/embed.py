"""``monai-pso embed``: train the re-identification embedder, look at a saved embedder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from monai_pso.cli.options import threads_option


@click.group()
def embed() -> None:
    """Embedders: images -> vectors for the privacy distance (see docs/embedders.md)."""


def _report(provenance: dict) -> str:
    """One line on the validation AUC of a freshly trained embedder."""
    images, patients = provenance["val_images"], provenance["val_patients"]
    if provenance["val_auc"] is None:
        return f"val AUC n/a: the val split has {images} image(s) of {patients} patient(s); it needs 2 patients or more"
    pairs = f"val AUC {provenance['val_auc']:.3f} on {images} images of {patients} patients (pixel embedder: {provenance['pixel_val_auc']:.3f})"
    nearest = provenance.get("val_nearest_auc")
    if nearest is None:
        return f"{pairs}; as the guard decides (1:N): n/a, too few val patients with repeat images"
    return f"{pairs}; as the guard decides (1:N): {nearest:.3f} (pixel embedder: {provenance['pixel_val_nearest_auc']:.3f})"


@embed.command("train")
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to save the embedder in.")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1), help="Passes over the training images.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2), help="Images (anchors) per step.")
@click.option("--dim", default=128, show_default=True, type=click.IntRange(min=2), help="Embedding dimension.")
@click.option("--input-size", default=None, type=click.IntRange(min=8), help="Resample images to this side first [default: the image side, at most 64 in 2D, 32 in 3D].")
@click.option("--lr", "learning_rate", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True), help="AdamW learning rate (cosine decay).")
@click.option("--temperature", default=0.1, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Contrastive temperature.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]), help="Where to train.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds initialisation, sampling and augmentation.")
@threads_option
def train(source: str, out: Path, epochs: int, batch_size: int, dim: int, input_size: int | None, learning_rate: float, temperature: float, device: str, seed: int, threads: int) -> None:
    """Train the reid embedder on the train split of SOURCE, report its verification AUC on the val split
    (same-patient vs different-patient pairs; augmented views for single-image patients) and save it in OUT."""
    from monai_pso.embed.reid_training import train_reid
    from monai_pso.threads import cpu_threads

    with cpu_threads(threads):
        embedder = train_reid(
            source,
            epochs=epochs,
            batch_size=batch_size,
            dim=dim,
            input_size=input_size,
            learning_rate=learning_rate,
            temperature=temperature,
            device=device,
            seed=seed,
        )
    embedder.save(out)
    click.echo(_report(embedder.provenance))
    click.echo(f"saved {out} (fingerprint {embedder.fingerprint[:16]})")


@embed.command("info")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def info(directory: Path) -> None:
    """Show the settings, fingerprint and provenance of the embedder saved in DIRECTORY (weights checked)."""
    from monai_pso.embed.registry import load_embedder

    embedder = load_embedder(directory)
    click.echo(json.dumps({"name": embedder.name, "fingerprint": embedder.fingerprint, "settings": embedder.settings, "provenance": embedder.provenance}, indent=2))
