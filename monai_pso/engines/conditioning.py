"""How a latent diffusion UNet is conditioned, and the classifier-free-guidance "null" condition.

Three modes, matching ``monai.networks.nets.DiffusionModelUNet``:

- ``None``: unconditional;
- ``"class"``: an integer label through the class embedding (``num_class_embeds = classes + 1``,
  the last index being the null class used for CFG dropout and the unconditional branch);
- ``"context"``: a float vector ``(D,)`` (covariates, or an embedding of an image) or a sequence of
  vectors ``(T, D)`` through cross-attention (``with_conditioning=True``, ``cross_attention_dim=D``);
  the null context is zeros.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import TransformBackends, convert_to_tensor

from monai_pso.errors import ConfigurationError

CONDITION_MODES = (None, "class", "context")


@dataclass(frozen=True)
class Conditioning:
    """A conditioning scheme: where the condition is read from and how it enters the UNet.

    Parameters
    ----------
    mode
        ``None``, ``"class"`` or ``"context"``.
    key
        Batch key of the condition (``"label"`` for classes, e.g. ``"covariates"`` or ``"embedding"``).
    null_class
        The class index meaning "no condition" (mode ``"class"``): the UNet's ``num_class_embeds - 1``.

    Examples
    --------
    >>> c = Conditioning("class", "label", null_class=2)
    >>> c.null_like(torch.tensor([0, 1])).tolist(), sorted(c.unet_kwargs(torch.tensor([1])))
    ([2, 2], ['class_labels'])
    """

    mode: str | None = None
    key: str = "label"
    null_class: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in CONDITION_MODES:
            raise ConfigurationError(f"condition_mode={self.mode!r}: not one of {CONDITION_MODES}")
        if self.mode == "class" and self.null_class is None:
            raise ConfigurationError("condition_mode='class': needs null_class (the UNet's num_class_embeds - 1)")

    def prepare(self, condition: Any, device: torch.device | str) -> torch.Tensor | None:
        """The condition as the UNet wants it: long ``(B,)`` labels, or float ``(B, T, D)`` context."""
        if self.mode is None or condition is None:
            return None
        value = convert_to_tensor(condition, track_meta=False).to(device)
        if self.mode == "class":
            return value.reshape(-1).long()
        value = value.float()
        return value[:, None, :] if value.ndim == 2 else value

    def from_batch(self, batch: Mapping[str, Any], device: torch.device | str) -> torch.Tensor | None:
        """The prepared condition of a training batch (``None`` when unconditional)."""
        if self.mode is None:
            return None
        if self.key not in batch:
            raise ConfigurationError(f"condition_key={self.key!r}: not in the training batch, which has only {sorted(map(str, batch))}")
        return self.prepare(batch[self.key], device)

    def null_like(self, condition: torch.Tensor) -> torch.Tensor:
        """The unconditional counterpart of ``condition`` (null class, or zero context)."""
        if self.mode == "class":
            return torch.full_like(condition, int(self.null_class))
        return torch.zeros_like(condition)

    def dropout(self, condition: torch.Tensor | None, probability: float) -> torch.Tensor | None:
        """Classifier-free-guidance dropout: each item's condition becomes null with ``probability``."""
        if condition is None or probability <= 0:
            return condition
        drop = torch.rand(condition.shape[0], device=condition.device) < probability
        shape = (-1,) + (1,) * (condition.ndim - 1)
        return torch.where(drop.reshape(shape), self.null_like(condition), condition)

    def unet_kwargs(self, condition: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``DiffusionModelUNet.forward`` carrying ``condition``."""
        if condition is None:
            return {}
        return {"class_labels": condition} if self.mode == "class" else {"context": condition}


class PooledFeatured(MapTransform):
    """An image's feature vector for conditioning: the image average-pooled to a coarse grid, flattened.

    This is the conditioning of the diversity-aware generation scheme (one synthetic image per training
    image, conditioned on that image's features through cross-attention): coarse enough that the UNet
    must invent the detail, so the privacy guard can then check the result against every training image.

    Parameters
    ----------
    keys
        Image keys ``(1, *spatial)``.
    grid
        Pooled size per spatial axis; the vector has ``grid ** spatial_dims`` entries.
    output_key
        Where to write the vector (float32 ``(D,)``).

    Examples
    --------
    >>> d = PooledFeatured("image", grid=4)({"image": torch.rand(1, 32, 32)})
    >>> tuple(d["features"].shape)
    (16,)
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, keys: KeysCollection, grid: int = 4, output_key: str = "features", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.grid = grid
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = pooled_features(d[key], self.grid)
        return d


def pooled_features(image: Any, grid: int = 4) -> torch.Tensor:
    """Feature vector of one image ``(1, *spatial)`` (see :class:`PooledFeatured`).

    Examples
    --------
    >>> tuple(pooled_features(torch.rand(1, 8, 8, 8), grid=2).shape)
    (8,)
    """
    image = convert_to_tensor(image, track_meta=False).float()
    pool = torch.nn.functional.adaptive_avg_pool2d if image.ndim == 3 else torch.nn.functional.adaptive_avg_pool3d
    return pool(image[None], grid).reshape(-1)
