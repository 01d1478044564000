"""Per-axis matrices give the same vectors as the image-by-image steps they replace: tiles smoothed and
resampled, and the guard's moved, mirrored and re-exposed query views of the pixel embedder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_pso.embed.base import Embedding
from monai_pso.embed.images import resample, smooth
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.embed.tiles import TileLayout
from monai_pso.embed.views import QueryViews


def one_tile_at_a_time(batch: torch.Tensor, layout: TileLayout, sigma: float, size: tuple[int, ...]) -> torch.Tensor:
    """The reference: cut every tile out, smooth it on its own, resample it."""
    grids = np.meshgrid(*[np.asarray(s) for s in layout.starts], indexing="ij")
    tiles = []
    for start in zip(*(g.ravel() for g in grids)):
        window = batch[(slice(None), slice(None)) + tuple(slice(int(s), int(s) + t) for s, t in zip(start, layout.tile))]
        tiles.append(resample(smooth(window, sigma), size).flatten(1))
    return torch.stack(tiles, dim=1)


@pytest.mark.parametrize("dims", [2, 3])
def test_cut_smoothed_equals_tile_by_tile(dims: int) -> None:
    rng = np.random.default_rng(dims)
    for _ in range(6):
        grid = tuple(int(n) for n in rng.integers(9, 30 if dims == 2 else 17, dims))
        layout = TileLayout.build(grid, tiles=int(rng.integers(1, 5)))
        sigma = float(rng.choice([0.0, rng.uniform(0.3, 3.0)]))
        size = tuple(int(n) for n in rng.integers(2, 2 * min(layout.tile) + 2, dims))  # shrinking and growing axes
        batch = torch.from_numpy(rng.random((2, 1, *grid))).float()
        fast = layout.cut_smoothed(batch, sigma, size)
        assert fast.shape == (2, layout.count, int(np.prod(size)))
        torch.testing.assert_close(fast, one_tile_at_a_time(batch, layout, sigma, size), atol=2e-6, rtol=0)


def test_unsmoothed_tiles_are_the_pixels() -> None:
    batch = torch.arange(36.0).reshape(1, 1, 6, 6)
    layout = TileLayout.build((6, 6), tile_size=4)
    tiles = layout.cut_smoothed(batch, 0.0, layout.tile).reshape(1, layout.count, 4, 4)
    assert torch.equal(tiles[0, 0], batch[0, 0, :4, :4]) and torch.equal(tiles[0, -1], batch[0, 0, 2:, 2:])


@pytest.mark.parametrize("dims", [2, 3])
def test_query_views_of_the_pixel_embedder_equal_embedding_each_view(dims: int) -> None:
    """The separable path (moves, mirrors and resampling as matrices) against moving, mirroring and embedding
    each view image on its own, over random shapes, grids, tile modes, shifts, turns and exposure changes."""
    rng = np.random.default_rng(10 + dims)
    for _ in range(5):
        shape = tuple(int(n) for n in rng.integers(7, 70 if dims == 2 else 36, dims))
        settings = {"grid": int(rng.integers(4, 20)), "smoothing": float(rng.uniform(0.0, 1.5))}
        if rng.random() < 0.5:
            settings["tiles"] = int(rng.integers(2, 4))
        embedder = PixelEmbedder(**settings, flip_axes=tuple(int(a) for a in rng.choice(dims, int(rng.integers(0, dims + 1)), replace=False)))
        views = QueryViews(
            max_shift=int(rng.integers(0, 3)),
            rotations=tuple(rng.uniform(-8.0, 8.0, int(rng.integers(0, 3)))) if dims == 2 else (),
            intensity=tuple((float(rng.uniform(0.7, 1.3)), float(rng.uniform(-0.1, 0.1))) for _ in range(int(rng.integers(0, 3)))),
        )
        batch = torch.from_numpy(rng.random((2, 1, *shape))).float()
        fast = views.embed(embedder, batch)
        one_by_one = Embedding.concat([embedder.embed_queries(view) for view in views.images(batch)])
        assert fast.vectors.shape == one_by_one.vectors.shape and np.array_equal(fast.valid, one_by_one.valid)
        np.testing.assert_allclose(fast.vectors, one_by_one.vectors, atol=2e-6, rtol=0)
