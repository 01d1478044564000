"""The ``pixel`` embedder: an image resampled to a small grid, scaled so that distances are RMS differences.

Global mode (the default): one vector per image, the image resampled to ``grid`` (antialiased, see
:func:`~monai_pso.embed.images.resample`), low-passed with a Gaussian of ``smoothing`` grid pixels and
divided by ``sqrt(number of grid pixels)``. The L2 distance between two vectors is then the
root-mean-square intensity difference of the two resampled images, in the ``[0, 1]`` units of the
images, whatever the grid.

Tile mode (``tiles`` or ``tile_size``): overlapping tiles of the grid (:mod:`monai_pso.embed.tiles`),
each scaled by ``1/sqrt(tile pixels)`` so its distance is the RMS difference over the tile, plus the
whole image resampled to the tile shape as one more vector. Each vector ends with its tile indices
and a whole-image flag, so vectors from different places are at least 1 apart: farther than any two
tiles at the same place can be (values lie in ``[0, 1]``). The distance between two images is thus the
smallest RMS difference of two tiles at the same place, or of the two whole images. Each tile is
smoothed on its own (edges replicated), so its vector depends only on the image inside it. Tiles that
are mostly background (less than ``min_tile_foreground`` of their pixels above ``background``) or flat
(standard deviation below ``min_tile_std``) carry no information and are marked invalid; the
whole-image vector is always valid.

Query side: the image and its mirror images along ``flip_axes``.

Examples
--------
>>> import numpy as np
>>> embedder = PixelEmbedder()
>>> image = np.random.default_rng(0).random((1, 1, 64, 64)).astype(np.float32)
>>> embedder.embed(image).vectors.shape, embedder.embed_queries(image).vectors.shape
((1, 1, 1024), (1, 2, 1024))
>>> tiled = PixelEmbedder(tiles=3)
>>> tiled.embed(image).vectors.shape  # 9 tiles of 16x16 + the whole image, + 2 indices + 1 flag
(1, 10, 259)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from monai_pso.embed.base import Embedder, Embedding
from monai_pso.embed.images import ImageBatch, as_image_batch, embed_with_flips, mirrored_translations, resample, resampled_translations, resolve_flip_axes, smooth, spatial_shape
from monai_pso.embed.tiles import TileLayout
from monai_pso.errors import EmbedderSettingsError

#: Grid side per spatial dimensionality when ``grid`` is not given.
DEFAULT_GRID = {2: 32, 3: 16}


class PixelEmbedder(Embedder):
    """Resampled pixels as vectors, globally or per tile; distances are RMS intensity differences.

    Parameters
    ----------
    grid
        Resampled shape: an int (every axis) or one length per axis; ``None``: 32 in 2D, 16 in 3D.
    smoothing
        Standard deviation, in grid pixels, of the Gaussian applied after resampling; it damps what
        shifts of a pixel or two change. ``0`` turns it off.
    tiles
        Tiles per axis (``0``: global mode). The tile side is ``ceil(2 * grid / (tiles + 1))``.
    tile_size
        Tile side in grid pixels (instead of, or with, ``tiles``); stride about half a tile.
    flip_axes
        Spatial axes whose mirror image is added on the query side, one view each; ``None``: the
        left-right candidates of :func:`~monai_pso.embed.images.default_flip_axes`; ``()``: none.
    min_tile_std, min_tile_foreground, background
        A tile counts only when its standard deviation is at least ``min_tile_std`` and at least the
        fraction ``min_tile_foreground`` of its pixels are brighter than ``background``: blank or mostly
        blank tiles (a sliver of body outline in a corner) look alike in every image.

    Examples
    --------
    >>> PixelEmbedder(grid=16).settings["grid"], PixelEmbedder().fingerprint != PixelEmbedder(smoothing=0).fingerprint
    (16, True)
    """

    name = "pixel"

    def __init__(
        self,
        grid: int | Sequence[int] | None = None,
        smoothing: float = 1.0,
        tiles: int = 0,
        tile_size: int | None = None,
        flip_axes: Sequence[int] | None = None,
        min_tile_std: float = 0.02,
        min_tile_foreground: float = 0.5,
        background: float = 0.05,
    ) -> None:
        super().__init__()
        self.grid = None if grid is None else int(grid) if np.isscalar(grid) else [int(g) for g in grid]
        self.smoothing = float(smoothing)
        self.tiles = int(tiles)
        self.tile_size = None if tile_size is None else int(tile_size)
        self.flip_axes = None if flip_axes is None else [int(a) for a in flip_axes]
        self.min_tile_std = float(min_tile_std)
        self.min_tile_foreground = float(min_tile_foreground)
        self.background = float(background)
        if self.smoothing < 0 or self.tiles < 0 or (self.tile_size is not None and self.tile_size < 1):
            raise EmbedderSettingsError(f"pixel embedder: smoothing={smoothing}, tiles={tiles}, tile_size={tile_size}: none may be negative, tile_size >= 1")

    @property
    def tiled(self) -> bool:
        """Whether the embedder is in tile mode."""
        return self.tiles > 0 or self.tile_size is not None

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "grid": self.grid,
            "smoothing": self.smoothing,
            "tiles": self.tiles,
            "tile_size": self.tile_size,
            "flip_axes": self.flip_axes,
            "min_tile_std": self.min_tile_std,
            "min_tile_foreground": self.min_tile_foreground,
            "background": self.background,
        }

    def grid_shape(self, spatial_dims: int) -> tuple[int, ...]:
        """The resampled shape for ``spatial_dims``-D images."""
        return spatial_shape(DEFAULT_GRID[spatial_dims] if self.grid is None else self.grid, spatial_dims, "grid")

    def tile_layout(self, spatial_dims: int) -> TileLayout:
        """Where the tiles lie on the grid of ``spatial_dims``-D images (tile mode only)."""
        return _layout(self.grid_shape(spatial_dims), self.tiles, self.tile_size)

    def _shapes(self, dims: int) -> list[tuple[int, ...]]:
        """The shapes an image is resampled to: the grid (global mode), or the tile grid and the tile shape (the whole image's vector)."""
        if not self.tiled:
            return [self.grid_shape(dims)]
        layout = self.tile_layout(dims)
        return [layout.grid, layout.tile]

    def embed(self, images: ImageBatch) -> Embedding:
        batch = as_image_batch(images)
        return self._of_resampled([resample(batch, shape) for shape in self._shapes(batch.ndim - 2)])

    def embed_translations(self, images: ImageBatch, max_shift: int) -> Embedding:
        """:meth:`embed_queries` of every integer translation of the images by up to ``max_shift`` pixels per axis
        (borders replicated), side by side on the ``T`` axis in the order of ``itertools.product`` of the offsets.

        The same vectors as translating and embedding image by image (:class:`~monai_pso.embed.views.QueryViews`
        uses this), at a small share of the cost for large images and volumes: moving and resampling are
        separable (:func:`~monai_pso.embed.images.resampled_translations`), and mirroring commutes with
        resampling (:func:`~monai_pso.embed.images.mirrored_translations`).

        Examples
        --------
        >>> PixelEmbedder().embed_translations(np.random.rand(2, 1, 40, 40).astype(np.float32), 1).vectors.shape  # 9 moves x 2 mirrors
        (2, 18, 1024)
        """
        batch = as_image_batch(images)
        dims = batch.ndim - 2
        moved = [resampled_translations(batch, max_shift, shape) for shape in self._shapes(dims)]  # each (B, V, 1, *shape)
        mirrored = []
        for axis in (None, *resolve_flip_axes(self.flip_axes, dims)):
            views = moved if axis is None else [mirrored_translations(v, axis) for v in moved]
            embedded = self._of_resampled([v.flatten(0, 1) for v in views])  # (B * V, T, D)
            mirrored.append((embedded.vectors.reshape(len(batch), -1, *embedded.vectors.shape[1:]), embedded.valid.reshape(len(batch), -1, embedded.valid.shape[1])))
        # per move: the image, then its mirror images (the order of embed_queries of each moved image)
        vectors = np.stack([v for v, _ in mirrored], axis=2).reshape(len(batch), -1, mirrored[0][0].shape[-1])
        valid = np.stack([m for _, m in mirrored], axis=2).reshape(len(batch), -1)
        return Embedding(np.ascontiguousarray(vectors), valid)

    def _of_resampled(self, resampled: list[torch.Tensor]) -> Embedding:
        """The vectors of images already resampled to :meth:`_shapes` (each ``(B, 1, *shape)``)."""
        if not self.tiled:
            return Embedding.single(rms_scaled(smooth(resampled[0], self.smoothing).flatten(1)).cpu().numpy())
        grid, tile = resampled
        layout = self.tile_layout(grid.ndim - 2)
        dims = grid.ndim - 2
        tiles = layout.cut_smoothed(grid, self.smoothing, layout.tile)  # (B, N, prod(tile)), each tile smoothed on its own
        whole = smooth(tile, self.smoothing).flatten(1)[:, None, :]
        values = rms_scaled(torch.cat([whole, tiles], dim=1)).cpu().numpy()
        places = np.concatenate([_place(np.zeros((1, dims), np.float32), 1.0), _place(layout.positions(), 0.0)])
        vectors = np.concatenate([values, np.broadcast_to(places, values.shape[:2] + places.shape[1:])], axis=2)
        valid = np.concatenate([np.ones((len(grid), 1), bool), self._informative(tiles).cpu().numpy()], axis=1)
        return Embedding(np.ascontiguousarray(vectors, dtype=np.float32), valid)

    def _informative(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(B, N)``: tiles with enough foreground and enough contrast to count."""
        foreground = (tiles > self.background).float().mean(dim=2)
        return (foreground >= self.min_tile_foreground) & (tiles.std(dim=2, unbiased=False) >= self.min_tile_std)

    def embed_queries(self, images: ImageBatch) -> Embedding:
        return embed_with_flips(self.embed, images, self.flip_axes)


def rms_scaled(values: torch.Tensor) -> torch.Tensor:
    """Divide the last axis by the square root of its length: L2 distances become RMS differences.

    Examples
    --------
    >>> rms_scaled(torch.ones(1, 4)).norm().item()
    1.0
    """
    return values / math.sqrt(values.shape[-1])


def _place(positions: np.ndarray, whole_image: float) -> np.ndarray:
    """Place coordinates appended to each vector: tile indices, then the whole-image flag."""
    return np.concatenate([positions, np.full((len(positions), 1), whole_image, np.float32)], axis=1)


@lru_cache(maxsize=16)
def _layout(grid: tuple[int, ...], tiles: int, tile_size: int | None) -> TileLayout:
    return TileLayout.build(grid, tiles, tile_size)
