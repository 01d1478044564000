"""Overlapping tiles of a resampled image: where they start, cutting them out, which carry information.

Tiles of ``t`` pixels per axis start at ``round(linspace(0, G - t, n))`` on a grid of ``G`` pixels, so
they cover the grid edge to edge; with the default counts the stride is about half a tile, so
anything smaller than half a tile lies wholly inside at least one tile.

Examples
--------
>>> layout = TileLayout.build((32, 32), tiles=3)
>>> layout.tile, layout.starts, layout.count
((16, 16), ((0, 8, 16), (0, 8, 16)), 9)
>>> layout.cut_smoothed(torch.zeros(2, 1, 32, 32), sigma=0.0, size=layout.tile).shape  # unsmoothed, unresampled: the tiles cut out
torch.Size([2, 9, 256])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monai_pso.embed.images import axis_operator
from monai_pso.errors import EmbedderSettingsError


@dataclass(frozen=True)
class TileLayout:
    """Tile size and start positions, per spatial axis, on a grid."""

    grid: tuple[int, ...]
    tile: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, grid: tuple[int, ...], tiles: int = 0, tile_size: int | None = None) -> TileLayout:
        """Lay out ``tiles`` tiles per axis and/or tiles of ``tile_size`` pixels, overlapping by about half.

        Parameters
        ----------
        grid
            The resampled image shape.
        tiles
            Tiles per axis; with ``tile_size`` unset, the size is ``ceil(2 G / (tiles + 1))`` (stride half a tile).
        tile_size
            Tile length in grid pixels (every axis); with ``tiles`` unset, as many tiles as give a stride of
            at most half a tile.
        """
        if tiles < 0 or (tile_size is not None and tile_size < 1) or (tiles == 0 and tile_size is None):
            raise EmbedderSettingsError(f"tiles={tiles}, tile_size={tile_size}: need tiles >= 1 or tile_size >= 1")
        sizes = tuple(tile_size or math.ceil(2 * g / (tiles + 1)) for g in grid)
        if any(t > g for t, g in zip(sizes, grid)):
            raise EmbedderSettingsError(f"tile_size={tile_size} is larger than the grid {grid}")
        counts = tuple(tiles or math.ceil(2 * (g - t) / t) + 1 for g, t in zip(grid, sizes))
        starts = tuple(tuple(int(s) for s in np.round(np.linspace(0, g - t, n))) for g, t, n in zip(grid, sizes, counts))
        return cls(tuple(grid), sizes, starts)

    @property
    def count(self) -> int:
        """Number of tiles."""
        return math.prod(len(s) for s in self.starts)

    def positions(self) -> np.ndarray:
        """``(count, dims)`` tile indices along each axis (0, 1, ...), in the order of :meth:`cut_smoothed`."""
        grids = np.meshgrid(*[np.arange(len(s)) for s in self.starts], indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1).astype(np.float32)

    def cut_smoothed(self, batch: torch.Tensor, sigma: float, size: Sequence[int]) -> torch.Tensor:
        """``(B, 1, *grid)`` -> ``(B, count, prod(size))``: every tile smoothed on its own (``sigma`` pixels,
        edges replicated, so nothing outside it leaks in), then resampled to ``size`` (antialiased).

        The same as cutting the tiles out, then :func:`~monai_pso.embed.images.smooth` and
        :func:`~monai_pso.embed.images.resample` of each one, at a small share of the cost: both steps
        are separable linear maps of a tile, so along each axis one matrix (:func:`~monai_pso.embed.images.axis_operator`) maps
        every tile place at once.

        Examples
        --------
        >>> layout = TileLayout.build((32, 32), tiles=3)
        >>> layout.cut_smoothed(torch.rand(2, 1, 32, 32), 1.0, (6, 6)).shape
        torch.Size([2, 9, 36])
        """
        dims = len(self.grid)
        values = batch[:, 0]
        for axis, (start, length, out) in enumerate(zip(self.starts, self.tile, size)):
            dim = 1 + 2 * axis  # earlier axes have become (places, out) pairs
            index = (torch.tensor(start)[:, None] + torch.arange(length)[None, :]).to(values.device)
            cut = values.index_select(dim, index.flatten()).unflatten(dim, index.shape)  # (..., places, length, ...)
            operator = axis_operator(length, int(out), float(sigma)).to(values)
            values = torch.movedim(torch.movedim(cut, dim + 1, -1) @ operator.T, -1, dim + 1)
        order = [0] + [1 + 2 * a for a in range(dims)] + [2 + 2 * a for a in range(dims)]
        return values.permute(order).reshape(values.shape[0], self.count, -1)
