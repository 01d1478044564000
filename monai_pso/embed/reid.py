"""The ``reid`` embedder: a re-identification network that maps images of one patient close together.

A small MONAI :class:`~monai.networks.nets.Regressor` (2D or 3D residual units with group
normalisation, :class:`ReidNetwork`) maps the image to features, a head maps them to ``dim`` numbers,
and the output is L2-normalised: vectors lie on the unit sphere
and distances lie in ``[0, 2]``. Images are resampled to ``input_size`` first. Train it with
:func:`monai_pso.embed.reid_training.train_reid` (or ``monai-pso embed train``).

Examples
--------
>>> import numpy as np
>>> embedder = ReidEmbedder(spatial_dims=2, dim=8, channels=(8, 8, 8, 8), input_size=16)
>>> e = embedder.embed(np.random.rand(3, 1, 28, 28))
>>> e.vectors.shape, bool(np.allclose(np.linalg.norm(e.vectors, axis=-1), 1.0, atol=1e-5))
((3, 1, 8), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import Regressor
from torch import nn

from monai_pso.embed.images import spatial_shape
from monai_pso.embed.network import NetworkEmbedder, check_spatial_dims

#: Input side per spatial dimensionality when ``input_size`` is not given.
DEFAULT_INPUT_SIZE = {2: 64, 3: 32}
#: Feature channels of the encoder stages (each halves the resolution).
DEFAULT_CHANNELS = (16, 32, 64, 128)


class ReidNetwork(nn.Module):
    """MONAI ``Regressor`` encoder + MLP head, L2-normalised output ``(B, dim)``.

    The encoder is a stack of residual units, each halving the resolution, with group normalisation
    (an image's vector never depends on the rest of its batch, in training or not), ending in a linear
    layer over the whole final feature map (so where things are matters, as it does for anatomy).

    Examples
    --------
    >>> ReidNetwork((8, 8, 8), dim=4, channels=(8, 8, 8, 8))(torch.rand(2, 1, 8, 8, 8)).shape
    torch.Size([2, 4])
    """

    def __init__(self, input_size: Sequence[int], dim: int = 128, channels: Sequence[int] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        width = channels[-1]
        self.encoder = Regressor(
            in_shape=(1, *input_size),
            out_shape=(width,),
            channels=tuple(channels),
            strides=(2,) * len(channels),
            norm=("group", {"num_groups": min(8, *channels)}),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(width, dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(images)), dim=1)


class ReidEmbedder(NetworkEmbedder):
    """Re-identification vectors (unit length, ``dim`` numbers) from a :class:`ReidNetwork`.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    dim
        Output dimension.
    channels
        Encoder stage widths (each a multiple of the group-norm group count, 8 or the smallest width).
    input_size
        Resampled input shape (int or one per axis); ``None``: 64 in 2D, 32 in 3D.
    flip_axes, weights, state_dict_key, device, batch_size
        As in :class:`~monai_pso.embed.network.NetworkEmbedder`. Without ``weights`` the network is
        randomly initialised (to be trained).

    Examples
    --------
    >>> ReidEmbedder(spatial_dims=3, dim=16, channels=(8, 8, 8, 8)).settings["input_size"]
    [32, 32, 32]
    """

    name = "reid"

    def __init__(
        self,
        spatial_dims: int = 2,
        dim: int = 128,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        input_size: int | Sequence[int] | None = None,
        flip_axes: Sequence[int] | None = None,
        weights: str | Path | None = None,
        state_dict_key: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        check_spatial_dims(spatial_dims)
        self.dim = int(dim)
        self.channels = [int(c) for c in channels]
        size = spatial_shape(DEFAULT_INPUT_SIZE[spatial_dims] if input_size is None else input_size, spatial_dims, "input_size")
        network = ReidNetwork(size, self.dim, self.channels)
        super().__init__(network, spatial_dims, size, flip_axes, weights, state_dict_key, device, batch_size)

    @property
    def network_settings(self) -> dict[str, Any]:
        return {"spatial_dims": self.spatial_dims, "dim": self.dim, "channels": self.channels}

    def forward_vectors(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch)
