"""Encoding images to autoencoder latents: the latent scale factor and an optional per-item cache."""

from __future__ import annotations

from collections.abc import Sequence

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
