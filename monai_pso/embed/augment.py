"""Random views of a whole batch at once, on the batch's device: the positives of contrastive training.

MONAI's per-image random transforms (``RandAffine``, ``RandFlip``, ``RandScaleIntensity``,
``RandShiftIntensity``, ``RandGaussianNoise``) do the same to one image at a time; training draws two
views of every image at every step, so :class:`BatchAugment` applies them to the batch in one
``affine_grid`` / ``grid_sample`` call (GPU-friendly, tens of times faster on CPU).

Examples
--------
>>> augment = BatchAugment(spatial_dims=2, seed=0)
>>> views = augment(torch.rand(4, 1, 32, 32))
>>> tuple(views.shape), 0.0 <= float(views.min()) <= float(views.max()) <= 1.0
((4, 1, 32, 32), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_pso.embed.images import flip, resolve_flip_axes


class BatchAugment:
    """Random rotation, zoom, shift, flips, intensity change and noise, drawn per image.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    seed
        Seeds the generator: the same seed and inputs give the same views.
    rotation
        Largest rotation in degrees (about each axis in 3D).
    zoom
        Largest relative zoom in or out; a zoom-in with a shift is a random crop.
    shift
        Largest shift as a fraction of the side.
    flip_axes
        Each axis is mirrored with probability 0.5 (``None``: the left-right candidates).
    intensity_scale, intensity_shift
        Intensities are multiplied by ``1 + U(-s, s)`` and shifted by ``U(-o, o)``.
    noise
        Largest standard deviation of the added Gaussian noise (drawn per image).
    """

    def __init__(
        self,
        spatial_dims: int,
        seed: int = 0,
        rotation: float = 10.0,
        zoom: float = 0.1,
        shift: float = 0.06,
        flip_axes: Sequence[int] | None = None,
        intensity_scale: float = 0.1,
        intensity_shift: float = 0.05,
        noise: float = 0.02,
    ) -> None:
        self.spatial_dims = spatial_dims
        self.rotation, self.zoom, self.shift = math.radians(rotation), zoom, shift
        self.flip_axes = resolve_flip_axes(flip_axes, spatial_dims)
        self.intensity_scale, self.intensity_shift, self.noise = intensity_scale, intensity_shift, noise
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, *shape: int, bound: float = 1.0) -> torch.Tensor:
        return (torch.rand(shape, generator=self.generator) * 2.0 - 1.0) * bound

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *spatial)`` in ``[0, 1]`` -> random views of the same shape, clipped to ``[0, 1]``."""
        count, dims, device = len(batch), self.spatial_dims, batch.device
        angles = self._uniform(count, 1 if dims == 2 else 3, bound=self.rotation)
        matrix = rotation_matrices(angles) / (1.0 + self._uniform(count, 1, 1, bound=self.zoom))
        theta = torch.cat([matrix, self._uniform(count, dims, 1, bound=2.0 * self.shift)], dim=2)
        grid = F.affine_grid(theta.to(device, batch.dtype), list(batch.shape), align_corners=False)
        views = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        for axis in self.flip_axes:
            chosen = (torch.rand(count, generator=self.generator) < 0.5).to(device).view(-1, *[1] * (dims + 1))
            views = torch.where(chosen, flip(views, (axis,)), views)
        per_image = (count,) + (1,) * (dims + 1)
        scale = 1.0 + self._uniform(*per_image, bound=self.intensity_scale)
        offset = self._uniform(*per_image, bound=self.intensity_shift)
        sigma = torch.rand(per_image, generator=self.generator) * self.noise
        noise = torch.randn(views.shape, generator=self.generator) * sigma
        return (views * scale.to(views) + offset.to(views) + noise.to(views)).clamp(0.0, 1.0)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``(B, 1)`` angles -> 2D rotations ``(B, 2, 2)``; ``(B, 3)`` angles -> 3D rotations ``(B, 3, 3)``
    (about the three axes in turn).

    Examples
    --------
    >>> r = rotation_matrices(torch.tensor([[0.3, -0.2, 1.0]]))
    >>> bool(torch.allclose(r @ r.transpose(1, 2), torch.eye(3), atol=1e-6))
    True
    """
    cos, sin = angles.cos(), angles.sin()
    if angles.shape[1] == 1:
        return torch.stack([torch.cat([cos, -sin], 1), torch.cat([sin, cos], 1)], dim=1)
    result = torch.eye(3).repeat(len(angles), 1, 1)
    for axis in range(3):
        i, j = [a for a in range(3) if a != axis]
        turn = torch.eye(3).repeat(len(angles), 1, 1)
        turn[:, i, i], turn[:, i, j], turn[:, j, i], turn[:, j, j] = cos[:, axis], -sin[:, axis], sin[:, axis], cos[:, axis]
        result = result @ turn
    return result
