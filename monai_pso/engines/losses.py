"""Losses of the autoencoder stage: KL term, and a perceptual loss that never downloads weights."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(mu, sigma^2)`` from ``N(0, 1)``, summed over latent voxels, averaged over the batch.

    Examples
    --------
    >>> float(kl_loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)))
    0.0
    """
    dims = list(range(1, z_mu.ndim))
    per_item = 0.5 * torch.sum(z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1.0, dim=dims)
    return per_item.mean()


def offline_perceptual_loss(spatial_dims: int, weights_path: str | Path | None = None, fake_3d_ratio: float = 0.25):
    """MONAI ``PerceptualLoss`` on a ResNet-50 whose weights come from a local file, or ``None``.

    MONAI's LPIPS networks (alex, vgg, squeeze) and the RadImageNet / MedicalNet ones fetch weights
    through ``torch.hub``; only ``network_type="resnet50"`` with ``pretrained_path`` loads a local file
    (``torch.load(..., weights_only=True)``). Without ``weights_path`` the perceptual term is switched
    off (a randomly initialised network would add cost without meaning). 3D volumes use the 2.5D
    ("fake 3D") approach on a fraction of the slices.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    weights_path
        Local torchvision ResNet-50 state dict, or ``None`` to switch the term off.
    fake_3d_ratio
        Fraction of slices per axis used in 3D.

    Examples
    --------
    >>> offline_perceptual_loss(2) is None
    True
    """
    if weights_path is None:
        logger.info("perceptual loss off: no local weights given (perceptual_weights=null)")
        return None
    path = Path(weights_path).expanduser()
    if not path.is_file():
        from monai_pso.errors import DataSourceError

        raise DataSourceError(path, "perceptual-loss weights not found (a torchvision ResNet-50 state dict)")
    from monai.losses import PerceptualLoss

    return PerceptualLoss(
        spatial_dims=spatial_dims,
        network_type="resnet50",
        is_fake_3d=spatial_dims == 3,
        fake_3d_ratio=fake_3d_ratio,
        pretrained=True,
        pretrained_path=str(path),
    )
