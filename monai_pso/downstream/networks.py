"""Networks of the downstream tasks, built from MONAI: a DenseNet classifier and a residual UNet restorer."""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet, DenseNet121, UNet
from torch import nn

from monai_pso.errors import ConfigurationError

#: DenseNet sizes: ``"121"`` is MONAI's DenseNet121; ``"small"`` a three-block DenseNet for CPU runs.
DENSENET_SIZES = ("small", "121")


def densenet(spatial_dims: int, in_channels: int = 1, out_channels: int = 2, size: str = "small", dropout_prob: float = 0.0) -> nn.Module:
    """A MONAI DenseNet classifier returning logits ``(B, out_channels)``.

    Examples
    --------
    >>> net = densenet(2, 1, 3)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 3])
    """
    if size == "121":
        return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, dropout_prob=dropout_prob)
    if size != "small":
        raise ConfigurationError(f"network_size={size!r}: unknown DenseNet size, choose from {', '.join(DENSENET_SIZES)}")
    return DenseNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        init_features=16,
        growth_rate=8,
        block_config=(2, 2, 2),
        bn_size=2,
        dropout_prob=dropout_prob,
    )


class ResidualUNet(nn.Module):
    """``x + UNet(x)``: a MONAI UNet learning the residual between a degraded image and the clean one.

    A 1x1 convolution head on the UNet's features starts at zero, so the untrained network is the identity.
    Used for denoising (RED-CNN-like residual learning) and for super-resolution on the interpolated
    low-resolution image. Spatial sizes must be divisible by ``2 ** len(channels) - 1``.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    channels
        Feature channels per level.

    Examples
    --------
    >>> net = ResidualUNet(2, channels=(8, 16, 32))
    >>> net(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 1, 28, 28])
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64), num_res_units: int = 1) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=channels[0],
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=num_res_units,
        )
        self.head = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(channels[0], in_channels, kernel_size=1)
        nn.init.zeros_(self.head.weight)  # start as the identity: the untrained network returns its input
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.head(torch.relu(self.unet(x)))
