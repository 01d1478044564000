"""Training the ``reid`` embedder contrastively, and measuring it on held-out patients.

Each step takes ``batch_size`` training images (anchors) and, for each, a partner: another image of
the same patient where the patient has several (phantom, IXI slices, CT visits), else the anchor
itself (MedMNIST: one image per patient). Both are augmented independently
(:class:`~monai_pso.embed.augment.BatchAugment`: rotation, shift and zoom, which acts as a random crop;
flips; intensity scale and shift; noise), embedded, and pulled together by a supervised contrastive
(SupCon / NT-Xent) loss in which every other image of the same patient in the batch is a positive and
every other patient's image a negative. An epoch is one pass over the training images.

After training, :func:`~monai_pso.embed.verification.verification_auc` on the validation split
(at most ``max_val_images`` images) is stored in the embedder's provenance, with the pixel
embedder's AUC on the same pairs for comparison.

Examples
--------
>>> embedder = train_reid("phantom:2d?patients=6&acquisitions=2&size=16", epochs=1, batch_size=4,
...                       dim=8, channels=(8, 8, 8, 8), progress=False)
>>> sorted(k for k in embedder.provenance if k.endswith("auc"))
['pixel_val_auc', 'val_auc']
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from monai_pso.data import DataSource, ImageRecord, load_image, load_source
from monai_pso.embed.augment import BatchAugment
from monai_pso.embed.images import resample, spatial_shape
from monai_pso.embed.network import resolve_device
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.embed.reid import DEFAULT_CHANNELS, DEFAULT_INPUT_SIZE, ReidEmbedder
from monai_pso.embed.verification import verification_auc
from monai_pso.errors import DataSourceError, EmbedderSettingsError, ImageValueError


def supervised_contrastive_loss(vectors: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupCon loss (Khosla et al. 2020) of unit ``vectors (N, D)`` whose ``labels (N,)`` name the patient.

    For each vector, minus the mean over its positives (same label, not itself) of the log-softmax of
    the cosine similarity divided by ``temperature`` over all other vectors. With exactly two views
    per patient this is NT-Xent (SimCLR).

    Examples
    --------
    >>> v = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]), dim=1)
    >>> good = supervised_contrastive_loss(v, torch.tensor([0, 0, 1, 1]))
    >>> bad = supervised_contrastive_loss(v, torch.tensor([0, 1, 0, 1]))
    >>> bool(good < bad)
    True
    """
    similarity = vectors @ vectors.T / temperature
    itself = torch.eye(len(vectors), dtype=torch.bool, device=vectors.device)
    log_prob = similarity.masked_fill(itself, -torch.inf).log_softmax(dim=1)
    positive = (labels[:, None] == labels[None, :]) & ~itself
    return -(log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1).clamp(min=1)).mean()


def choose_input_size(shape: Sequence[int]) -> tuple[int, ...]:
    """The network input for images of ``shape``: each side capped at 64 (2D) or 32 (3D).

    Examples
    --------
    >>> choose_input_size((28, 28)), choose_input_size((120, 120, 90))
    ((28, 28), (32, 32, 32))
    """
    return tuple(min(int(s), DEFAULT_INPUT_SIZE[len(shape)]) for s in shape)


def load_images(records: Sequence[ImageRecord], size: int | Sequence[int] | None, progress: bool = False) -> torch.Tensor:
    """The records' images in ``[0, 1]``, resampled to ``size`` and stacked ``(N, 1, *size)``.

    ``size`` is an int (every axis), one length per axis, or ``None``: :func:`choose_input_size` of
    the first image. Raises :class:`~monai_pso.errors.ImageValueError` naming the item when an
    image is not 2D or 3D, or not of the dimensionality of the first.
    """
    images: list[torch.Tensor] = []
    for record in tqdm(records, desc="loading", disable=not progress, leave=False):
        image = torch.as_tensor(load_image(record))[None]
        dims = image.ndim - 2
        if dims not in (2, 3) or (images and image.ndim != images[0].ndim + 1):
            raise ImageValueError(f"{record.item_id}: image of shape {tuple(image.shape[1:])} does not fit a 2D or 3D dataset of its first image")
        size = choose_input_size(image.shape[2:]) if size is None else spatial_shape(size, dims, "input_size")
        images.append(resample(image, size)[0])
    return torch.stack(images)


class _PairSampler:
    """Batches of anchor indices, each with a partner index from the same patient where possible."""

    def __init__(self, patients: Sequence[str], batch_size: int, seed: int) -> None:
        self.labels = np.unique(np.asarray(patients), return_inverse=True)[1]
        self.members = [np.flatnonzero(self.labels == label) for label in range(self.labels.max() + 1)]
        self.batch_size = max(2, min(batch_size, len(self.labels)))
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch(self):
        order = self.rng.permutation(len(self.labels))
        for start in range(0, len(order), self.batch_size):
            anchors = order[start : start + self.batch_size]
            partners = np.array([self._partner(i) for i in anchors])
            yield anchors, partners, torch.as_tensor(np.concatenate([self.labels[anchors], self.labels[partners]]))

    def _partner(self, index: int) -> int:
        others = self.members[self.labels[index]]
        others = others[others != index]
        return int(self.rng.choice(others)) if len(others) else int(index)


def train_reid(
    source: str | DataSource,
    epochs: int = 20,
    batch_size: int = 32,
    dim: int = 128,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    input_size: int | Sequence[int] | None = None,
    learning_rate: float = 1e-3,
    temperature: float = 0.1,
    device: str = "cpu",
    seed: int = 0,
    max_val_images: int = 512,
    progress: bool = True,
) -> ReidEmbedder:
    """Train a :class:`~monai_pso.embed.reid.ReidEmbedder` on the train split of ``source``.

    Parameters
    ----------
    source
        A SOURCE string or a loaded :class:`~monai_pso.data.DataSource` (train and val splits used).
    epochs, batch_size, learning_rate, temperature
        Passes over the training images, anchors per step, AdamW learning rate (cosine decay),
        contrastive temperature.
    dim, channels, input_size
        The network (see :class:`~monai_pso.embed.reid.ReidEmbedder`); ``input_size=None`` picks
        :func:`choose_input_size` of the first image.
    device, seed
        Where to train; the seed fixes initialisation, sampling and augmentation.
    max_val_images
        Cap on validation images for the AUC (a seeded random subset beyond it).
    progress
        Show tqdm progress bars.

    Returns
    -------
    The trained embedder; ``provenance`` holds the source, settings of the run, ``val_auc`` and
    ``pixel_val_auc`` (``None`` when the validation split has too few patients).
    """
    target = resolve_device(device)
    dataset = load_source(source)
    train = dataset.split("train").records
    if len({r.patient_id for r in train}) < 2:
        raise DataSourceError(dataset.description, "reid training needs at least 2 patients in the train split")
    if epochs < 1 or batch_size < 2:
        raise EmbedderSettingsError(f"epochs={epochs}, batch_size={batch_size}: need epochs >= 1 and batch_size >= 2")
    started = time.time()
    images = load_images(train, input_size, progress)
    with torch.random.fork_rng(devices=[target.index or 0] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        embedder = ReidEmbedder(images.ndim - 2, dim, channels, list(images.shape[2:]), device=target)
        loss = _fit(embedder, images, [r.patient_id for r in train], epochs, batch_size, learning_rate, temperature, seed, progress)
    embedder.provenance = {
        "source": dataset.description,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "temperature": temperature,
        "seed": seed,
        "device": str(embedder.device),
        "train_images": len(train),
        "train_patients": len({r.patient_id for r in train}),
        "final_loss": loss,
        "train_seconds": round(time.time() - started, 1),
        **validate_reid(embedder, dataset, max_val_images, seed),
    }
    return embedder


def _fit(
    embedder: ReidEmbedder,
    images: torch.Tensor,
    patients: Sequence[str],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    seed: int,
    progress: bool,
) -> float:
    """The training loop; returns the mean loss of the last epoch."""
    network, device = embedder.network, embedder.device
    images = images.to(device)
    sampler = _PairSampler(patients, batch_size, seed)
    augment = BatchAugment(images.ndim - 2, seed)
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * len(sampler))
    network.train()
    bar = tqdm(total=epochs * len(sampler), desc="reid training", unit="step", disable=not progress)
    for epoch in range(epochs):
        losses = []
        for anchors, partners, labels in sampler.epoch():
            views = augment(images[np.concatenate([anchors, partners])])
            loss = supervised_contrastive_loss(network(views), labels.to(device), temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses):.3f}")
    bar.close()
    network.eval()
    return float(np.mean(losses))


def validate_reid(embedder: ReidEmbedder, dataset: DataSource, max_images: int = 512, seed: int = 0) -> dict[str, Any]:
    """Verification AUC of ``embedder`` and of the pixel embedder on the val split (see module docstring)."""
    records = dataset.split("val").records
    if len(records) > max_images:
        chosen = np.sort(np.random.default_rng(seed).choice(len(records), max_images, replace=False))
        records = [records[i] for i in chosen]
    result: dict[str, Any] = {"val_images": len(records), "val_patients": len({r.patient_id for r in records})}
    if len(records) < 2:
        return {**result, "val_auc": None, "pixel_val_auc": None}
    images = load_images(records, embedder.input_size)
    patients = [r.patient_id for r in records]
    for key, evaluated in (("val_auc", embedder), ("pixel_val_auc", PixelEmbedder())):
        result[key] = verification_auc(evaluated, images, patients, BatchAugment(images.ndim - 2, seed + 1))
    return result
