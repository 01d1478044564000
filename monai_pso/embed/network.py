"""What the network embedders (``reid``, ``latent``) share: a torch module run in batches, and its weights.

A :class:`NetworkEmbedder` resamples images to its ``input_size`` (when set), runs the network in
evaluation mode without gradients in chunks of ``batch_size`` on ``device``, and returns one vector per
image. Its settings name where its weights are stored (``weights``, ``state_dict_key``); the
fingerprint hashes the other settings and the weights themselves, so it survives saving and moving.
Vectors computed on a GPU differ from CPU ones by floating-point rounding (cuDNN may use TF32), far
below any privacy threshold; embed a reference set and its queries on one kind of device when exact
reproducibility matters.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_pso.embed.base import Embedder, Embedding
from monai_pso.embed.images import ImageBatch, as_image_batch, embed_with_flips, resample
from monai_pso.embed.persistence import WEIGHTS_FILE, load_state_dict
from monai_pso.errors import EmbedderSettingsError, ImageValueError


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, refusing CUDA where there is none.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EmbedderSettingsError(f"device={device!r}: CUDA is not available on this machine")
    return resolved


def check_spatial_dims(spatial_dims: int) -> None:
    """Refuse anything but 2 or 3 spatial dimensions."""
    if spatial_dims not in (2, 3):
        raise EmbedderSettingsError(f"spatial_dims={spatial_dims}: must be 2 or 3")


class NetworkEmbedder(Embedder):
    """Base of embedders whose vectors come from a torch module.

    Parameters
    ----------
    network
        The module; :meth:`forward_vectors` turns its output into ``(B, D)`` vectors.
    spatial_dims
        2 or 3: the images it takes.
    input_size
        Images are resampled to this shape first (``None``: taken as they are).
    flip_axes
        Spatial axes mirrored on the query side, one view each (``None``: left-right candidates).
    weights, state_dict_key
        Where the weights are stored (a checkpoint path and the entry inside it), loaded into
        ``network`` when given; recorded in :attr:`settings` but not in the fingerprint.
    device
        Where the network runs.
    batch_size
        Images per forward pass.
    """

    def __init__(
        self,
        network: nn.Module,
        spatial_dims: int,
        input_size: Sequence[int] | None = None,
        flip_axes: Sequence[int] | None = None,
        weights: str | Path | None = None,
        state_dict_key: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        self.network = network
        self.spatial_dims = int(spatial_dims)
        self.input_size = None if input_size is None else [int(s) for s in input_size]
        self.flip_axes = None if flip_axes is None else [int(a) for a in flip_axes]
        self.weights = None if weights is None else Path(weights).resolve()
        self.state_dict_key = state_dict_key
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        if self.weights is not None:
            self.load_weights(self.weights, state_dict_key)
        self.network.to(self.device)

    @property
    @abstractmethod
    def network_settings(self) -> dict[str, Any]:
        """The settings that describe the network (architecture, output), without location or views."""

    @abstractmethod
    def forward_vectors(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *input)`` on :attr:`device` -> ``(B, D)`` vectors (no gradients needed)."""

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.network_settings,
            "input_size": self.input_size,
            "flip_axes": self.flip_axes,
            "weights": None if self.weights is None else str(self.weights),
            "state_dict_key": self.state_dict_key,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.network.state_dict()

    def load_weights(self, path: str | Path, state_dict_key: str | None = None) -> None:
        """Load a state dict (``weights_only=True``) into the network, naming the file on mismatch."""
        state = load_state_dict(path, state_dict_key)
        try:
            self.network.load_state_dict(state)
        except RuntimeError as error:
            raise EmbedderSettingsError(f"{path}: weights do not fit the {self.name} network of these settings: {str(error)[:400]}") from None

    def embed(self, images: ImageBatch) -> Embedding:
        batch = as_image_batch(images)
        if batch.ndim - 2 != self.spatial_dims:
            raise ImageValueError(f"images: the {self.name} embedder takes {self.spatial_dims}D images, got shape {tuple(batch.shape)}")
        if self.input_size is not None:
            batch = resample(batch, self.input_size)
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.inference_mode():
                parts = [self.forward_vectors(chunk.to(self.device)).float().cpu() for chunk in batch.split(self.batch_size)]
        finally:
            self.network.train(was_training)
        return Embedding.single(torch.cat(parts).numpy())

    def embed_queries(self, images: ImageBatch) -> Embedding:
        return embed_with_flips(self.embed, images, self.flip_axes)

    def save(self, directory: str | Path) -> Path:
        """Save (see :meth:`Embedder.save`); afterwards :attr:`settings` name the saved weights."""
        path = super().save(directory)
        self.weights, self.state_dict_key = (Path(directory) / WEIGHTS_FILE).resolve(), None
        return path

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> NetworkEmbedder:
        """Rebuild from settings; they must name a weights file (a random network is not reproducible)."""
        if settings.get("weights") is None:
            raise EmbedderSettingsError(f"settings of the {cls.name} embedder name no weights file; save the embedder first")
        return super().from_settings(settings)
