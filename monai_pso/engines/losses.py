"""Losses of the autoencoder stage: KL term, and a perceptual loss that never downloads weights."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from monai.losses.perceptual import HF_MONAI_MODELS, PerceptualLoss, PerceptualNetworkType
from monai.utils import optional_import

from monai_pso.errors import ConfigurationError, DataSourceError

logger = logging.getLogger(__name__)

HUB_REPO = "Project-MONAI/perceptual-models:main"
HUB_REPO_FOLDER = "Project-MONAI_perceptual-models_main"  # where torch.hub keeps HUB_REPO inside its folder
LPIPS_NETWORKS = frozenset(("alex", "vgg", "squeeze"))


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


def offline_perceptual_loss(
    spatial_dims: int,
    weights_path: str | Path | None = None,
    fake_3d_ratio: float = 0.25,
    network_type: str | None = None,
    pretrained: bool = True,
) -> PerceptualLoss | None:
    """MONAI ``PerceptualLoss`` built from local files only, or ``None`` (the perceptual term off).

    MONAI fetches the weights of its perceptual networks from the internet; three routes avoid it:

    - ``weights_path`` a **torch hub folder** holding ``Project-MONAI_perceptual-models_main`` (and the
      weights its entry points fetched), prepared on a connected machine: the RadImageNet ResNet-50
      (``"radimagenet_resnet50"``, the 2D default; 2.5D in 3D) or a MedicalNet ResNet
      (``"medicalnet_resnet10_23datasets"``, the 3D default, or ``"medicalnet_resnet50_23datasets"``; 3D only).
      ``torch.hub`` uses that folder during construction only; its previous folder is restored after.
    - ``weights_path`` a **file**: a torchvision ResNet-50 state dict (``network_type="resnet50"``).
    - ``network_type="resnet50"`` with ``pretrained=False``: a randomly initialised torchvision ResNet-50.

    Both ResNet-50 routes need torchvision. MONAI's LPIPS networks (``alex``, ``vgg``, ``squeeze``) are
    refused: LPIPS loads their ImageNet backbones through torchvision's downloader whatever ``pretrained``
    says. Without ``weights_path`` and ``network_type`` the term is off. 3D volumes use the 2.5D
    ("fake 3D") approach on a fraction of the slices, except with MedicalNet (a 3D network).

    Parameters
    ----------
    spatial_dims
        2 or 3.
    weights_path
        A torch hub folder, a ResNet-50 state dict, or ``None``.
    fake_3d_ratio
        Fraction of slices per axis used by the 2.5D approach.
    network_type
        One of MONAI's ``PerceptualNetworkType`` names; ``None`` picks from ``weights_path`` (see above).
    pretrained
        Passed to MONAI for the torchvision ResNet-50: ``False`` initialises it randomly.

    Raises
    ------
    DataSourceError
        ``weights_path`` does not exist, or a hub folder lacks ``Project-MONAI_perceptual-models_main``.
    ConfigurationError
        The network does not fit the route, the dimensions, or would download weights.
    ImportError
        torchvision is needed and not installed.

    Examples
    --------
    >>> offline_perceptual_loss(2) is None
    True
    """
    path = None if weights_path is None else Path(weights_path).expanduser()
    network = network_type or _default_network(spatial_dims, path)
    if network is None:
        logger.info("perceptual loss off: no local weights given (perceptual_weights=null)")
        return None
    if network not in set(PerceptualNetworkType):
        raise ConfigurationError(f"perceptual network_type={network!r}: unknown, not one of {', '.join(PerceptualNetworkType)}")
    if network in HF_MONAI_MODELS:
        return _hub_perceptual_loss(spatial_dims, _hub_folder(path, network), network, fake_3d_ratio)
    return _torchvision_perceptual_loss(spatial_dims, path, network, pretrained, fake_3d_ratio)


def _default_network(spatial_dims: int, path: Path | None) -> str | None:
    """The network a ``weights_path`` implies: a hub folder's default for the dimensions, ResNet-50 for a file."""
    if path is None:
        return None
    if path.is_dir():
        return "radimagenet_resnet50" if spatial_dims == 2 else "medicalnet_resnet10_23datasets"
    return "resnet50"


def _hub_folder(path: Path | None, network: str) -> Path:
    """``path`` checked to be a torch hub folder holding MONAI's perceptual-models repository."""
    if path is None or not path.is_dir():
        raise ConfigurationError(f"perceptual network_type={network!r}: needs weights_path, a torch hub folder holding {HUB_REPO_FOLDER}")
    if not (path / HUB_REPO_FOLDER).is_dir():
        raise DataSourceError(
            path / HUB_REPO_FOLDER,
            f"not found: prepare the torch hub folder on a connected machine with torch.hub.load({HUB_REPO!r}, "
            f"{network!r}, trust_repo=True) after torch.hub.set_dir(folder), then copy the folder",
        )
    return path


@contextmanager
def hub_dir(folder: str | Path) -> Iterator[None]:
    """``torch.hub``'s folder set to ``folder`` inside the ``with`` block, the previous one restored after.

    Examples
    --------
    >>> before = torch.hub.get_dir()
    >>> with hub_dir("/tmp/hub"):
    ...     torch.hub.get_dir()
    '/tmp/hub'
    >>> torch.hub.get_dir() == before
    True
    """
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(folder))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)


def _hub_perceptual_loss(spatial_dims: int, folder: Path, network: str, fake_3d_ratio: float) -> PerceptualLoss:
    """RadImageNet (2D, or 2.5D in 3D) or MedicalNet (3D) from the local torch hub ``folder``."""
    medicalnet = network.startswith("medicalnet_")
    if medicalnet and spatial_dims != 3:
        raise ConfigurationError(f"perceptual network_type={network!r}: a 3D network; use radimagenet_resnet50 for 2D images")
    with hub_dir(folder), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "MedicalNet networks support channel-wise loss")  # single-channel images
        return PerceptualLoss(spatial_dims, network, is_fake_3d=spatial_dims == 3 and not medicalnet, fake_3d_ratio=fake_3d_ratio)


def _torchvision_perceptual_loss(
    spatial_dims: int, path: Path | None, network: str, pretrained: bool, fake_3d_ratio: float
) -> PerceptualLoss:
    """The torchvision ResNet-50: weights from the state dict ``path``, or random with ``pretrained=False``."""
    if network in LPIPS_NETWORKS:
        raise ConfigurationError(f"perceptual network_type={network!r}: LPIPS downloads its ImageNet backbone; use resnet50 or a torch hub folder")
    if path is not None and not path.is_file():
        raise DataSourceError(path, "is a folder: resnet50 takes a state dict file" if path.is_dir() else "perceptual-loss weights not found")
    if pretrained and path is None:
        raise ConfigurationError("perceptual network_type='resnet50': pretrained weights would be downloaded; give weights_path, or pretrained=False")
    if not optional_import("torchvision")[1]:
        raise ImportError(f"network_type={network!r} needs torchvision (pip install torchvision)")
    return PerceptualLoss(
        spatial_dims,
        network,
        is_fake_3d=spatial_dims == 3,
        fake_3d_ratio=fake_3d_ratio,
        pretrained=pretrained,
        pretrained_path=None if path is None else str(path),
    )
