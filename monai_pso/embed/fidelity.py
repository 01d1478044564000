"""The ``fidelity`` embedder: does an image look like real data? Texture, edge and intensity statistics.

The privacy guard asks "is this image too close to a training image?" in the pixel embedding; the
fidelity embedding asks "does it look like any real image at all?". It is a fixed random-weight
convolutional network (:class:`FidelityNetwork`, 2D or 3D), drawn once from ``seed``: no training and
no downloaded weights, yet the same vectors on every machine. Randomly initialised networks are a
known stand-in for Inception/VGG features outside ImageNet's domain: Naeem et al. (ICML 2020,
"Reliable Fidelity and Diversity Metrics for Generative Models", section 5) measure precision, recall,
density and coverage in a random-weight VGG16 embedding, and Ustyuzhaninov et al. (ICLR 2017, "What
does it take to generate natural textures?") show that the statistics of random filters capture
texture. Nothing here is trained on medical images, so the embedding sees image *statistics*
(how edges, texture and intensities are distributed), not anatomy.

The vector of an image, resampled to ``input_size`` (64 in 2D, 32 in 3D):

- ``histogram``: the intensity distribution, ``bins`` soft (triangular) bins over ``[0, 1]``;
- per stage ``s`` of the network (resolution ``input_size / 2**s``): for each of its random
  filters, the spatial mean and standard deviation of the rectified response. The first stage's
  filters have zero mean, so they answer edges and texture and give 0 on flat regions.

Every statistic ``x`` becomes ``log(x + eps)`` (a factor on an energy is a shift, so an image with
``c`` times the real edge energy, like noise, lies as far from real images as one with ``1 / c`` of it, like heavy blur), and each block
(the histogram, each stage's means, each stage's deviations) is divided by ``sqrt(blocks * its
length)``: the L2 distance between two vectors is the RMS, over blocks, of each block's RMS
log-ratio, so every scale weighs the same whatever its channel count.

Examples
--------
>>> import numpy as np
>>> embedder = FidelityEmbedder(spatial_dims=2)
>>> embedder.embed(np.random.rand(2, 1, 28, 28)).vectors.shape
(2, 1, 336)
>>> rebuilt = FidelityEmbedder.from_settings(embedder.settings)
>>> rebuilt.fingerprint == embedder.fingerprint
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_pso.embed.images import spatial_shape
from monai_pso.embed.network import NetworkEmbedder, check_spatial_dims
from monai_pso.errors import EmbedderSettingsError

#: Input side per spatial dimensionality when ``input_size`` is not given.
DEFAULT_INPUT_SIZE = {2: 64, 3: 32}
#: Random filters per stage (each stage halves the resolution).
DEFAULT_CHANNELS = (32, 32, 32, 32, 32)
#: Added to every statistic before the logarithm: responses below it count as none.
DEFAULT_EPS = 1e-3


class FidelityNetwork(nn.Module):
    """A fixed random-weight multi-scale convolution stack returning pooled statistics ``(B, D)``.

    Stage ``s`` convolves its input (``3**dims`` filters, He-normal weights drawn from ``seed``; the
    first stage's filters have zero mean), rectifies, records the spatial mean and standard deviation
    of each channel, then average-pools by 2 for the next stage. The weights are buffers, not
    parameters: nothing trains them.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    channels
        Filters per stage.
    bins
        Soft histogram bins of the input intensities.
    eps
        Floor of every statistic before the logarithm.
    seed
        Seed of the weights.

    Examples
    --------
    >>> net = FidelityNetwork(2, channels=(4, 4), bins=8)
    >>> net(torch.rand(3, 1, 16, 16)).shape  # 8 bins + 2 stages x (4 means + 4 deviations)
    torch.Size([3, 24])
    """

    def __init__(self, spatial_dims: int, channels: Sequence[int] = DEFAULT_CHANNELS, bins: int = 16, eps: float = DEFAULT_EPS, seed: int = 0) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        self.spatial_dims, self.bins, self.eps = spatial_dims, int(bins), float(eps)
        generator = torch.Generator().manual_seed(int(seed))
        widths = [1, *(int(c) for c in channels)]
        for stage, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            weight = torch.randn((fan_out, fan_in) + (3,) * spatial_dims, generator=generator, dtype=torch.float32)
            if stage == 0:
                weight -= weight.mean(dim=tuple(range(1, weight.ndim)), keepdim=True)
            weight *= math.sqrt(2.0 / weight[0].numel()) / weight.flatten(1).std(dim=1).clamp_min(1e-12).view((-1,) + (1,) * (weight.ndim - 1))
            self.register_buffer(f"stage{stage}", weight)
        self.stages = len(widths) - 1

    def histogram(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, bins)``: the share of pixels in each soft bin (triangular kernels centred on ``linspace(0, 1, bins)``)."""
        centres = torch.linspace(0.0, 1.0, self.bins, device=images.device)
        weights = (1.0 - (images.flatten(1)[:, :, None] - centres).abs() * (self.bins - 1)).clamp_min(0.0)
        return weights.mean(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        convolve = F.conv2d if self.spatial_dims == 2 else F.conv3d
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        blocks = [self.histogram(images)]
        features = images
        for stage in range(self.stages):
            features = F.relu(convolve(F.pad(features, (1, 1) * self.spatial_dims, mode="replicate"), getattr(self, f"stage{stage}")))
            flat = features.flatten(2)
            blocks += [flat.mean(dim=2), flat.std(dim=2, unbiased=False)]
            if min(features.shape[2:]) >= 2:
                features = pool(features, 2)
        scale = [1.0 / math.sqrt(len(blocks) * block.shape[1]) for block in blocks]
        return torch.cat([torch.log(block + self.eps) * s for block, s in zip(blocks, scale)], dim=1)


class FidelityEmbedder(NetworkEmbedder):
    """Fidelity vectors: log texture, edge and intensity statistics of a fixed random network.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    channels
        Random filters per stage (one stage per entry, each halving the resolution).
    bins
        Soft intensity-histogram bins.
    eps
        Floor of every statistic before the logarithm.
    seed
        Seed of the random weights; with the other settings it fixes the embedder (the fingerprint
        covers the weights too).
    input_size
        Resampled input shape (int or one per axis); ``None``: 64 in 2D, 32 in 3D.
    flip_axes
        Query-side mirror views; ``()`` by default (pooled statistics hardly change under a flip).
    weights, state_dict_key
        A saved copy of the weights (what :meth:`save` writes), loaded over the ones drawn from ``seed``;
        ``None``: the drawn ones.
    device, batch_size
        As in :class:`~monai_pso.embed.network.NetworkEmbedder`.

    Examples
    --------
    >>> FidelityEmbedder(spatial_dims=3).settings["input_size"]
    [32, 32, 32]
    """

    name = "fidelity"

    def __init__(
        self,
        spatial_dims: int = 2,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        bins: int = 16,
        eps: float = DEFAULT_EPS,
        seed: int = 0,
        input_size: int | Sequence[int] | None = None,
        flip_axes: Sequence[int] | None = (),
        weights: str | Path | None = None,
        state_dict_key: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        check_spatial_dims(spatial_dims)
        self.channels = [int(c) for c in channels]
        self.bins, self.eps, self.seed = int(bins), float(eps), int(seed)
        if not self.channels or min(self.channels) < 1 or self.bins < 2 or self.eps <= 0:
            raise EmbedderSettingsError(f"fidelity embedder: channels={channels}, bins={bins}, eps={eps}: need at least one stage of >= 1 filter, bins >= 2, eps > 0")
        size = spatial_shape(DEFAULT_INPUT_SIZE[spatial_dims] if input_size is None else input_size, spatial_dims, "input_size")
        network = FidelityNetwork(spatial_dims, self.channels, self.bins, self.eps, self.seed)
        super().__init__(network, spatial_dims, size, flip_axes, weights, state_dict_key, device, batch_size)

    @property
    def network_settings(self) -> dict[str, Any]:
        return {"spatial_dims": self.spatial_dims, "channels": self.channels, "bins": self.bins, "eps": self.eps, "seed": self.seed}

    def forward_vectors(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FidelityEmbedder:
        """Rebuild from settings; without a weights file the weights are drawn from ``seed`` again."""
        return cls.create(**{key: value for key, value in settings.items() if key != "name"})
