"""Query-adaptive pose refinement: a full affine pose of the query box, optimised against one reference vector.

The ``copy`` check's query side (:class:`~monai_pso.embed.aligned.AlignedEmbedder`) searches a fixed grid of
poses; a near-copy moved, turned, zoomed or sheared between two grid poses, or anisotropically, lies
farther from its source than the copy itself is. For a query image and a candidate training vector,
:func:`refine_poses` starts from a grid pose and follows the gradient of the embedding distance (autograd
through ``F.affine_grid`` and ``F.grid_sample``) over every entry of the affine map (2D: 6, 3D: 12),
keeping the pose within :class:`PoseBounds`. It returns the pose with the smallest distance met; the
embedder then measures the distance at that pose exactly. Any pose gives an achieved distance of the
image, so the refined distance (the minimum with the grid's) can only be lower than the grid's.

Examples
--------
>>> working = torch.rand(2, 1, 16, 16)
>>> start = torch.eye(2, 3).expand(2, 2, 3) * 0.7
>>> from torch.nn.functional import affine_grid, grid_sample
>>> vectorise = lambda images, theta: grid_sample(images, affine_grid(theta, [2, 1, 4, 4], align_corners=False), align_corners=False).flatten(1)
>>> target = vectorise(working, start)
>>> refine_poses(working, start, target, vectorise, steps=3, rate=0.01, bounds=PoseBounds(0.7)).shape
torch.Size([2, 2, 3])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PoseBounds:
    """Where a refined pose may go: linear part within ``linear`` of ``scale`` times the identity
    (entry by entry, as a share of ``scale``), translation within ``translation`` (``-1 .. 1`` image
    coordinates); widened to contain the start pose.

    Examples
    --------
    >>> low, high = PoseBounds(0.5, linear=0.2, translation=0.3).limits(torch.eye(2, 3)[None] * 0.5)
    >>> low[0].double().round(decimals=3).tolist(), high[0].double().round(decimals=3).tolist()
    ([[0.4, -0.1, -0.3], [-0.1, 0.4, -0.3]], [[0.6, 0.1, 0.3], [0.1, 0.6, 0.3]])
    """

    scale: float
    linear: float = 0.25
    translation: float = 0.4

    def limits(self, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds ``(N, dims, dims + 1)`` of the poses refined from ``start``."""
        dims = start.shape[-2]
        centre = torch.zeros_like(start)
        centre[..., :dims] = torch.eye(dims, dtype=start.dtype) * self.scale
        reach = torch.full_like(start, self.linear * self.scale)
        reach[..., dims] = self.translation
        return torch.minimum(centre - reach, start), torch.maximum(centre + reach, start)


def refine_poses(
    working: torch.Tensor,
    start: torch.Tensor,
    references: torch.Tensor,
    vectorise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int,
    rate: float,
    bounds: PoseBounds,
) -> torch.Tensor:
    """The pose of each image nearest its reference vector met in ``steps`` steps of Adam from ``start``.

    The poses are optimised side by side but independently (the loss is a sum of one term per pose), so a
    pose's result does not depend on the others, provided its inputs are bitwise the same: the steps follow
    the equalisation's kinks, where a rounding difference of the image can lead elsewhere.

    Parameters
    ----------
    working
        ``(N, 1, *spatial)`` images, one per pose to refine.
    start
        ``(N, dims, dims + 1)`` affine maps from the box grid to image coordinates (``F.affine_grid``'s ``theta``).
    references
        ``(N, D)`` the vector each image is brought close to.
    vectorise
        ``(images, theta) -> (N, D)`` vectors of the images under the poses, differentiable in ``theta``.
    steps, rate
        Adam steps and learning rate (in ``-1 .. 1`` image coordinates per step).
    bounds
        The poses' limits (:class:`PoseBounds`).

    Returns
    -------
    torch.Tensor
        ``(N, dims, dims + 1)``: per image, the pose of smallest L2 distance among those visited (``start`` included).
    """
    low, high = bounds.limits(start)
    theta = start.clone().requires_grad_(True)
    best, best_distance = start.clone(), torch.full((len(start),), torch.inf, dtype=references.dtype)
    optimiser = torch.optim.Adam([theta], lr=rate)
    for step in range(steps + 1):
        distance = (vectorise(working, theta) - references).norm(dim=1)
        with torch.no_grad():
            better = distance < best_distance
            best[better], best_distance[better] = theta[better], distance[better]
        if step == steps:
            break
        optimiser.zero_grad()
        distance.sum().backward()
        optimiser.step()
        with torch.no_grad():
            theta.copy_(torch.maximum(torch.minimum(theta, high), low))
    return best.detach()
