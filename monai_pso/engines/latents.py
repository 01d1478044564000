"""Encoding images to autoencoder latents: the latent scale factor, an optional per-item cache, and the
identity "autoencoder" of a pixel-space diffusion model (:class:`PixelSpace`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def latent_scale_factor(latents: torch.Tensor) -> float:
    """``1 / std`` of a batch of latents (averaged over ranks under DDP), as in MONAI's LDM tutorials.

    Examples
    --------
    >>> round(latent_scale_factor(2.0 * torch.randn(4096)), 1)
    0.5
    """
    std = latents.detach().float().std()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(std, op=dist.ReduceOp.SUM)
        std = std / dist.get_world_size()
    return float(1.0 / std.clamp_min(1e-8))


class LatentCache:
    """Posterior parameters ``(mu, sigma)`` of each training item, encoded once and kept on the CPU.

    Each use draws a fresh ``z = mu + sigma * eps``, so caching changes cost, not the training signal.
    Valid only when the images reaching the trainer are the same every epoch (no random augmentation).

    Examples
    --------
    >>> cache = LatentCache()
    >>> enc = lambda x: (x * 0 + 1, x * 0)  # a fake encoder: mu = 1, sigma = 0
    >>> cache.latents(["a", "b"], torch.zeros(2, 1, 2, 2), enc).mean().item(), len(cache)
    (1.0, 2)
    """

    def __init__(self) -> None:
        self._store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def latents(self, item_ids: Sequence[str], images: torch.Tensor, encode) -> torch.Tensor:
        """Latent samples of a batch, encoding (with ``encode(images) -> (mu, sigma)``) only unseen items."""
        missing = [i for i, item in enumerate(item_ids) if item not in self._store]
        if missing:
            mu, sigma = encode(images[missing])
            for row, i in enumerate(missing):
                self._store[item_ids[i]] = (mu[row].detach().cpu(), sigma[row].detach().cpu())
        mu = torch.stack([self._store[item][0] for item in item_ids]).to(images.device)
        sigma = torch.stack([self._store[item][1] for item in item_ids]).to(images.device)
        return mu + sigma * torch.randn_like(sigma)


class PixelSpace(torch.nn.Module):
    """The autoencoder of a diffusion model on the pixels: images in ``[0, 1]`` <-> "latents" in ``[-1, 1]``.

    It stands where an ``AutoencoderKL`` stands (``encode`` gives ``(mu, sigma)`` with ``sigma = 0``,
    ``decode_stage_2_outputs`` maps back), so the same trainer, sampler and bundle configs run a pixel-space
    diffusion model; it has no weights (its checkpoint, :func:`save_pixel_space`, holds an empty state).

    Examples
    --------
    >>> space = PixelSpace()
    >>> mu, sigma = space.encode(torch.ones(1, 1, 4, 4))
    >>> mu.max().item(), sigma.abs().max().item(), space.decode_stage_2_outputs(mu).min().item()
    (1.0, 0.0, 1.0)
    """

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(2 * images - 1, 0)``: the images as the diffusion model's (noise-free) latents."""
        return 2.0 * images - 1.0, torch.zeros_like(images)

    def decode_stage_2_outputs(self, latents: torch.Tensor) -> torch.Tensor:
        """``(latents + 1) / 2``: back to image intensities."""
        return (latents + 1.0) / 2.0


def save_pixel_space(ckpt_dir: str | Path) -> Path:
    """Write ``CKPT_DIR/autoencoder.pt`` for a pixel-space bundle (:class:`PixelSpace`: an empty state dict).

    A bundle's first training stage calls this instead of training an autoencoder, so that every later
    run (generation, provenance hashes) finds the same files whatever the space.

    Examples
    --------
    >>> import tempfile
    >>> saved = torch.load(save_pixel_space(tempfile.mkdtemp()), weights_only=True)
    >>> dict(saved["autoencoder"]), saved["pixel_space"]
    ({}, True)
    """
    path = Path(ckpt_dir) / "autoencoder.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"autoencoder": PixelSpace().state_dict(), "pixel_space": True}, path)
    return path
