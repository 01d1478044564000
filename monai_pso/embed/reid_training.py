"""Training the ``reid`` embedder contrastively, and measuring it on held-out patients.

Each step takes ``batch_size`` training images of patients with several images (anchors) and, for
each, a partner: another image of the same patient (phantom, IXI slices, CT visits, repeat X-rays),
preferring the pixel-farthest so near-copies rarely pair, and a hard negative: a look-alike image of
another patient (:class:`IdentityBatches`). Without any patient of two images (MedMNIST) every image
is an anchor and its partner is itself: the network then learns copies, not identity. All are augmented independently
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
['pixel_val_auc', 'pixel_val_nearest_auc', 'val_auc', 'val_nearest_auc']
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
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
from monai_pso.embed.verification import nearest_reference_auc, verification_auc
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


class IdentityBatches:
    """Batches for identity training: anchors, a partner from another acquisition, and hard negatives.

    Anchors are images of patients with two or more images (every image when no patient has two:
    MedMNIST, where the partner is the anchor itself and the network can only learn copy detection).
    Each anchor's partner is another image of its patient, drawn with probability proportional to its
    pixel distance from the anchor, so near-copies from one admission rarely make the pair. With
    ``hard_negatives``, each anchor brings one of the ``k`` images of *other* patients nearest to it in
    pixel space (mined once with a thumbnail index), so the loss meets strangers that look alike.
    Images of single-image patients enter only as hard negatives.

    Parameters
    ----------
    patients
        Patient id of each training image.
    thumbnails
        ``(N, F)`` flattened small copies of the images: the pixel index of the mining.
    batch_size, seed
        Anchors per batch; the random generator's seed.
    hard_negatives
        Mine and add the hard negatives.
    k
        Nearest other-patient images an anchor's hard negative is drawn from.

    Examples
    --------
    >>> batches = IdentityBatches(["a", "a", "b", "b", "c"], torch.rand(5, 16), batch_size=2, seed=0)
    >>> [len(labels) for _, labels in batches.epoch()]
    [6, 6]
    """

    def __init__(self, patients: Sequence[str], thumbnails: torch.Tensor, batch_size: int, seed: int, hard_negatives: bool = True, k: int = 8) -> None:
        self.labels = np.unique(np.asarray(patients), return_inverse=True)[1]
        self.members = [np.flatnonzero(self.labels == label) for label in range(self.labels.max() + 1)]
        repeated = np.concatenate([m for m in self.members if len(m) >= 2] or [np.zeros(0, int)])
        self.anchors = repeated if len(repeated) else np.arange(len(self.labels))
        self.batch_size = max(2, min(batch_size, len(self.anchors)))
        self.rng = np.random.default_rng(seed)
        self.thumbnails = thumbnails.float()
        strangers = len(self.labels) - max(len(m) for m in self.members)
        self.negatives = nearest_strangers(self.thumbnails, self.labels, min(k, strangers)) if hard_negatives and strangers else None

    def __len__(self) -> int:
        return math.ceil(len(self.anchors) / self.batch_size)

    def epoch(self) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Per batch: image positions (anchors, partners, hard negatives) and their patient labels."""
        order = self.rng.permutation(self.anchors)
        for start in range(0, len(order), self.batch_size):
            anchors = order[start : start + self.batch_size]
            parts = [anchors, np.array([self._partner(i) for i in anchors])]
            if self.negatives is not None:
                parts.append(self.negatives[anchors, self.rng.integers(0, self.negatives.shape[1], len(anchors))])
            chosen = np.concatenate(parts)
            yield chosen, torch.as_tensor(self.labels[chosen])

    def _partner(self, index: int) -> int:
        others = self.members[self.labels[index]]
        others = others[others != index]
        if not len(others):
            return int(index)
        weights = (self.thumbnails[others] - self.thumbnails[index]).norm(dim=1).numpy().astype(np.float64) + 1e-6
        return int(self.rng.choice(others, p=weights / weights.sum()))


def nearest_strangers(thumbnails: torch.Tensor, labels: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """``(N, k)`` positions of the ``k`` images of other patients nearest each image (Euclidean, in chunks).

    Examples
    --------
    >>> nearest_strangers(torch.tensor([[0.0], [0.1], [1.0], [5.0]]), np.array([0, 0, 1, 2]), 1).ravel().tolist()
    [2, 2, 1, 2]
    """
    label_tensor = torch.as_tensor(labels)
    found = []
    for start in range(0, len(thumbnails), chunk):
        distances = torch.cdist(thumbnails[start : start + chunk], thumbnails)
        distances[label_tensor[start : start + chunk, None] == label_tensor[None, :]] = torch.inf
        found.append(distances.topk(k, dim=1, largest=False).indices)
    return torch.cat(found).numpy()


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
    *,
    hard_negatives: bool = True,
    initial: ReidEmbedder | None = None,
    augmentation: Mapping[str, float] | None = None,
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
    hard_negatives
        Add each anchor's look-alike image of another patient to its batch (:class:`IdentityBatches`).
    initial
        Fine-tune a copy of this embedder (its architecture and input size) instead of a new network.
    augmentation
        Options of :class:`~monai_pso.embed.augment.BatchAugment` (``rotation``, ``zoom``, ``noise``...).

    Returns
    -------
    The trained embedder; ``provenance`` holds the source, settings of the run, ``val_auc`` and
    ``pixel_val_auc`` (pairs within val), ``val_nearest_auc`` and ``pixel_val_nearest_auc`` (measured as
    the guard decides, :func:`~monai_pso.embed.verification.nearest_reference_auc`); ``None`` when the
    validation split has too few patients.
    """
    target = resolve_device(device)
    dataset = load_source(source)
    train = dataset.split("train").records
    if len({r.patient_id for r in train}) < 2:
        raise DataSourceError(dataset.description, "reid training needs at least 2 patients in the train split")
    if epochs < 1 or batch_size < 2:
        raise EmbedderSettingsError(f"epochs={epochs}, batch_size={batch_size}: need epochs >= 1 and batch_size >= 2")
    started = time.time()
    images = load_images(train, input_size if initial is None else initial.input_size, progress)
    with torch.random.fork_rng(devices=[target.index or 0] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        if initial is None:
            embedder = ReidEmbedder(images.ndim - 2, dim, channels, list(images.shape[2:]), device=target)
        else:
            embedder = ReidEmbedder(**{k: v for k, v in initial.settings.items() if k not in ("name", "weights", "state_dict_key")}, device=target)
            embedder.network.load_state_dict(initial.state_dict())
        batches = IdentityBatches([r.patient_id for r in train], resample(images, (16,) * (images.ndim - 2)).flatten(1), batch_size, seed, hard_negatives)
        augment = BatchAugment(images.ndim - 2, seed, **dict(augmentation or {}))
        loss = _fit(embedder, images, batches, augment, epochs, learning_rate, temperature, progress)
    embedder.provenance = {
        "source": dataset.description,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "temperature": temperature,
        "hard_negatives": hard_negatives,
        "augmentation": dict(augmentation or {}),
        "fine_tuned_from": None if initial is None else initial.fingerprint,
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
    batches: IdentityBatches,
    augment: BatchAugment,
    epochs: int,
    learning_rate: float,
    temperature: float,
    progress: bool,
) -> float:
    """The training loop; returns the mean loss of the last epoch."""
    network, device = embedder.network, embedder.device
    images = images.to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * len(batches))
    network.train()
    bar = tqdm(total=epochs * len(batches), desc="reid training", unit="step", disable=not progress)
    for epoch in range(epochs):
        losses = []
        for chosen, labels in batches.epoch():
            views = augment(images[chosen])
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
    for key, evaluated in (("val", embedder), ("pixel_val", PixelEmbedder())):
        result[f"{key}_auc"] = verification_auc(evaluated, images, patients, BatchAugment(images.ndim - 2, seed + 1))
        result[f"{key}_nearest_auc"] = nearest_reference_auc(evaluated, images, patients, seed)
    return result
