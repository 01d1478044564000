"""The ``aligned`` embedder: rank-equalised pixels of the central field, with the query aligned over a grid of poses.

A near-copy of a training image is the image moved, turned, zoomed or cropped, with its intensities
changed by some monotone curve (gamma, contrast, brightness) and some blur, noise or compression on
top. This embedder makes the distance blind to the monotone curves and searches over the poses:

- **Intensities**: the values sampled on a ``grid`` are mapped through their own piecewise-linear
  distribution function (:func:`equalised`, 17 quantiles: a smooth histogram equalisation): an
  increasing intensity change (gamma, contrast, brightness) leaves them nearly unchanged except where
  values saturate; the vector is then divided by ``sqrt(grid pixels)``, so distances are RMS
  differences of equalised values (``0 .. 1``).
- **Field**: the reference side samples the central ``field`` share of each side (a box), so the
  border, where a moved copy has lost or invented content, is left out.
- **Poses** (query side): the same box is sampled from the query under every translation of a fine
  grid (``moves``: every 2.5% of the side up to 12.5% in 2D, every 5% up to 10% in 3D) and under every
  combination of the ``rotations`` (2D: 0, +-5, +-10 degrees; 3D: 0, +-8 about each axis), ``zooms``
  (2D: 0.9 .. 1.1 by 0.05; 3D: 0.92, 1, 1.08) and small ``shifts`` (2D: up to 6% of the side by 3%), for the image and its mirror images along ``flip_axes``; the distance is the minimum
  over them (the package's distance contract). A moved copy keeps its central field inside the
  image while the move is below ``(1 - field) / 2`` of the side (15% by default).
- **Windows** (``windows=True``): instead of the central field, windows of a share of each side
  (:data:`WINDOW_GEOMETRY`; 43% in 2D, 12 of 28 pixels: a region of a quarter of the image or more holds
  one with room to spare; 36% in 3D, 10 of 28 voxels), cut at whole pixels: every 2 pixels (2D) or 3
  voxels (3D) on the reference side and every 1 or 2 on the query side, times ``ceil(side / 32)`` for
  larger images; on the query side of 2D images up to ``dense_queries`` pixels a side (default
  :data:`DENSE_QUERIES`, 64) every pixel, so a region pasted at any whole-pixel place meets a reference
  window exactly. Each window is smoothed on its own and compared in raw intensities (RMS; a pasted
  region is a copy of the pixels), with no poses: a region of a training image of at least a window plus
  a reference stride per side, pasted at whole pixels anywhere on another image of up to 32 pixels a
  side, holds a query window whose pixels are those of a training
  window (in larger images and in 3D, whose spacings are wider, it may be matched a few pixels off). Windows that are
  mostly background (less than ``min_foreground`` of their samples above ``background``) or flat
  (standard deviation below ``min_std``) identify nothing and do not count; an image keeps at least
  its most contrasted window.

Before sampling, the image is box-averaged by a whole factor while a box still spans ``grid`` pixels
or more (a fractional factor would average unevenly, depending on where the image lies: a shifted
copy would then differ from its source by far more than the shift), and smoothed with a Gaussian of
``smoothing`` box-grid pixels, so the bilinear sampling is not aliased and the poses' spacing is bridged.

Examples
--------
>>> import numpy as np
>>> embedder = AlignedEmbedder()
>>> image = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
>>> embedder.embed(image).vectors.shape, embedder.embed_queries(image).vectors.shape  # 11 x 11 moves + 5 x 5 x 25 poses, mirrored
((2, 1, 256), (2, 1492, 256))
>>> windows = AlignedEmbedder(windows=True)
>>> windows.embed(image).vectors.shape, windows.embed_queries(image).vectors.shape  # 9 x 9 and 17 x 17 windows, mirrored
((2, 81, 36), (2, 578, 36))
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_pso.embed.augment import rotation_matrices
from monai_pso.embed.base import Embedder, Embedding
from monai_pso.embed.images import ImageBatch, as_image_batch, flip, resolve_flip_axes, smooth
from monai_pso.embed.pose_refinement import PoseBounds, refine_poses
from monai_pso.embed.tiles import TileLayout
from monai_pso.errors import EmbedderSettingsError

#: Window mode, by geometry version and spatial dimensionality: the window side as a share of the image side,
#: and the spacing of window places in pixels on the reference and the query side (for images of up to 32
#: pixels a side; multiplied by ``ceil(side / 32)`` for larger ones). Version 2, the default, has smaller and
#: denser 3D windows (10 of 28 voxels every 3, queried every 2): a box of half the side or more holds a whole
#: reference window, where version 1's (14 every 7, queried every 4) needed 20 voxels
#: (``benchmarks/results/copy_recall.json``: AdrenalMNIST3D pasted boxes 13% -> 87% refused). 2D is the same in both.
WINDOW_GEOMETRY = {
    1: {2: (0.43, 2, 1), 3: (0.5, 7, 4)},
    2: {2: (0.43, 2, 1), 3: (0.36, 3, 2)},
}
DEFAULT_WINDOW_GEOMETRY = 2
#: Window mode, 2D: query windows every pixel on images up to this side (beyond it, and in 3D, every query
#: stride of :data:`WINDOW_GEOMETRY` times ``ceil(side / 32)``: a pixel-wise query side would cost ``(side / 32)^2``
#: times as many vectors).
DENSE_QUERIES = 64
#: Default poses of the query by spatial dimensionality: moves alone (shares of the side, on every axis),
#: and every combination of a turn (degrees), a zoom and a small shift. 3D has fewer (each multiplies by 3 axes).
POSE_KEYS = ("moves", "rotations", "zooms", "shifts")
DEFAULT_POSES = {
    2: {"moves": tuple(np.round(np.linspace(-0.125, 0.125, 11), 4)), "rotations": (-10.0, -5.0, 0.0, 5.0, 10.0), "zooms": (0.9, 0.95, 1.0, 1.05, 1.1), "shifts": (-0.06, -0.03, 0.0, 0.03, 0.06)},
    3: {"moves": (-0.1, -0.05, 0.0, 0.05, 0.1), "rotations": (-8.0, 0.0, 8.0), "zooms": (0.92, 1.0, 1.08), "shifts": (0.0,)},
}
#: Default grid (samples per axis of a box), whole field and windows, by spatial dimensionality.
DEFAULT_GRID = {(2, False): 16, (3, False): 10, (2, True): 6, (3, True): 7}
#: Pose refinement (field mode): nearest training vectors refined against, gradient steps, Adam's rate, and the
#: poses' limits (linear part within 25% of the field's identity map, translation within 20% of the side).
REFINE_CANDIDATES = 4
REFINE_STEPS = 30
REFINE_RATE = 0.01
REFINE_LINEAR, REFINE_TRANSLATION = 0.25, 0.4


class AlignedEmbedder(Embedder):
    """Rank-equalised samples of the central field (or of windows), the query aligned over poses.

    Parameters
    ----------
    windows
        Window mode (see the module docstring) instead of the central field.
    grid
        Samples per axis of a box; ``None``: :data:`DEFAULT_GRID` (16 for the field or 6 for windows in 2D, 10 or 7 in 3D).
    field
        Share of each side the central box covers (field mode).
    moves
        The query's translations alone (field mode), shares of the side, every combination on every axis.
    rotations, zooms, shifts
        The query's other poses (field mode): every combination of a turn in degrees (2D: in-plane; 3D:
        about each axis, one axis at a time), a relative scale and a small translation (shares of the
        side, on every axis). ``None`` (each of the four): :data:`DEFAULT_POSES` of the images' dimensionality.
    smoothing
        Gaussian standard deviation, in grid pixels, applied before sampling.
    flip_axes
        Spatial axes mirrored on the query side (``None``: the left-right candidates; ``()``: none).
    min_std, min_foreground, background
        Window mode: which boxes count.
    dense_queries
        Window mode, 2D: query windows every pixel on images up to this side (``0``: the scaled stride at
        every size, as in embedders made before this setting existed).
    window_geometry
        Window mode: the window sides and spacings of :data:`WINDOW_GEOMETRY` (``1``: those of embedders
        made before this setting existed).
    refine_candidates, refine_steps
        Field mode: the query's pose is refined (:meth:`refine`) against its ``refine_candidates`` nearest
        training vectors by ``refine_steps`` gradient steps; ``0`` steps: no refinement (the settings then
        leave both out, as in embedders made before refinement existed).

    Examples
    --------
    >>> AlignedEmbedder().settings["grid"], AlignedEmbedder(windows=True).fingerprint != AlignedEmbedder().fingerprint
    (None, True)
    >>> AlignedEmbedder().refines, AlignedEmbedder(windows=True).refines, "refine_steps" in AlignedEmbedder(refine_steps=0).settings
    (True, False, False)
    """

    name = "aligned"
    #: The embedder searches the poses itself: the guard adds no query views.
    searches_poses = True

    def __init__(
        self,
        windows: bool = False,
        grid: int | None = None,
        field: float = 0.7,
        rotations: Sequence[float] | None = None,
        zooms: Sequence[float] | None = None,
        shifts: Sequence[float] | None = None,
        moves: Sequence[float] | None = None,
        smoothing: float = 1.0,
        flip_axes: Sequence[int] | None = None,
        min_std: float = 0.02,
        min_foreground: float = 0.5,
        background: float = 0.05,
        refine_candidates: int = REFINE_CANDIDATES,
        refine_steps: int = REFINE_STEPS,
        dense_queries: int = DENSE_QUERIES,
        window_geometry: int = DEFAULT_WINDOW_GEOMETRY,
    ) -> None:
        super().__init__()
        self.windows = bool(windows)
        self.grid = None if grid is None else int(grid)
        self.field = float(field)
        self.rotations, self.zooms, self.shifts, self.moves = ([float(v) for v in values] if values is not None else None for values in (rotations, zooms, shifts, moves))
        self.smoothing = float(smoothing)
        self.flip_axes = None if flip_axes is None else [int(a) for a in flip_axes]
        self.min_std, self.min_foreground, self.background = float(min_std), float(min_foreground), float(background)
        self.refine_candidates, self.refine_steps = int(refine_candidates), int(refine_steps)
        self.dense_queries = int(dense_queries) if self.windows else 0
        self.window_geometry = int(window_geometry) if self.windows else 1
        if self.window_geometry not in WINDOW_GEOMETRY:
            raise EmbedderSettingsError(f"aligned embedder: window_geometry={window_geometry}: must be one of {sorted(WINDOW_GEOMETRY)}")
        if self.refine_steps < 0 or (self.refine_steps and self.refine_candidates < 1):
            raise EmbedderSettingsError(f"aligned embedder: refine_candidates={refine_candidates}, refine_steps={refine_steps}: need steps >= 0 and a candidate at least")
        chosen = [v for v in (self.rotations, self.zooms, self.shifts, self.moves) if v is not None]
        if not 0.0 < self.field <= 1.0 or (self.grid is not None and self.grid < 2) or not all(chosen) or min(self.zooms or [1.0]) <= 0:
            given = f"field={field}, grid={grid}, rotations={rotations}, zooms={zooms}, shifts={shifts}"
            raise EmbedderSettingsError(f"aligned embedder: {given}: need 0 < field <= 1, grid >= 2, positive zooms, one value at least of each")

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "windows": self.windows,
            "grid": self.grid,
            "field": self.field,
            "rotations": self.rotations,
            "zooms": self.zooms,
            "shifts": self.shifts,
            "moves": self.moves,
            "smoothing": self.smoothing,
            "flip_axes": self.flip_axes,
            "min_std": self.min_std,
            "min_foreground": self.min_foreground,
            "background": self.background,
            **({"refine_candidates": self.refine_candidates, "refine_steps": self.refine_steps} if self.refine_steps else {}),
            **({"dense_queries": self.dense_queries} if self.dense_queries else {}),
            **({"window_geometry": self.window_geometry} if self.window_geometry != 1 else {}),
        }

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> AlignedEmbedder:
        """The embedder of ``settings``; without ``refine_steps``, ``dense_queries`` or ``window_geometry`` (an
        index built before they existed) with no refinement, no dense query side and the first window geometry."""
        earlier = {"refine_steps": 0, "dense_queries": 0, "window_geometry": 1}
        return cls.create(**{**earlier, **{key: value for key, value in settings.items() if key != "name"}})

    @property
    def refines(self) -> bool:
        """Whether the guard refines the query's pose with :meth:`refine` (field mode, ``refine_steps > 0``)."""
        return not self.windows and self.refine_steps > 0

    def _grid(self, dims: int) -> int:
        return DEFAULT_GRID[(dims, self.windows)] if self.grid is None else self.grid

    def embed(self, images: ImageBatch) -> Embedding:
        batch = as_image_batch(images)
        dims = batch.ndim - 2
        if not self.windows:
            return self._sample(batch, self._field_boxes(dims, identity=True))
        share, reference_stride, _ = WINDOW_GEOMETRY[self.window_geometry][dims]
        return self._sample(batch, window_layout(batch.shape[2:], share, reference_stride))

    def embed_queries(self, images: ImageBatch) -> Embedding:
        batch = as_image_batch(images)
        dims = batch.ndim - 2
        if self.windows:
            share, _, query_stride = WINDOW_GEOMETRY[self.window_geometry][dims]
            dense = dims == 2 and min(batch.shape[2:]) <= self.dense_queries
            boxes = window_layout(batch.shape[2:], share, query_stride, scaled=not dense)
        else:
            boxes = self._field_boxes(dims, identity=False)
        axes = resolve_flip_axes(self.flip_axes, dims)
        return Embedding.concat([self._sample(view, boxes) for view in [batch] + [flip(batch, (axis,)) for axis in axes]])

    def _field_boxes(self, dims: int, identity: bool) -> torch.Tensor:
        """``(P, dims, dims + 1)`` affine maps from the box grid (``-1 .. 1``) to image coordinates, one per pose."""
        chosen = (self.moves, self.rotations, self.zooms, self.shifts)
        poses = tuple(tuple(DEFAULT_POSES[dims][key] if value is None else value) for key, value in zip(POSE_KEYS, chosen))
        return pose_maps(self.field, dims, identity, *poses).clone()

    def _sample(self, batch: torch.Tensor, boxes: Any) -> Embedding:
        """Vectors ``(B, P, grid**dims)``: of the windows of a layout, or of the field under affine maps ``(P, dims, dims + 1)``."""
        grid = self._grid(batch.ndim - 2)
        if self.windows:
            values = self._windows(batch, boxes, grid)
            valid = self._informative(values)
        else:
            values = equalised(self._poses(batch, boxes, grid))
            valid = torch.ones(values.shape[:2], dtype=torch.bool)
        return Embedding(np.ascontiguousarray((values / math.sqrt(values.shape[2])).numpy(), dtype=np.float32), valid.numpy())

    def _poses(self, batch: torch.Tensor, theta: torch.Tensor, grid: int) -> torch.Tensor:
        """``(B, P, grid**dims)``: the field under each pose, sampled from the smoothed image."""
        working = self._working(batch, self.field, grid)
        sampling = box_sampling(theta.to(working.dtype), grid)  # (P, *grid, dims)
        return torch.stack([
            F.grid_sample(image.expand(len(theta), *image.shape), sampling, mode="bilinear", padding_mode="border", align_corners=False).flatten(1)
            for image in working
        ])  # one image at a time to bound memory

    @torch.inference_mode(False)  # gradients of the pose, also when the caller samples under inference mode
    def refine(self, images: ImageBatch, queries: Embedding, references: np.ndarray) -> np.ndarray:
        """``(B, K)`` float64: the distance of each image, its pose refined, to each of its ``K`` reference vectors.

        Each pair starts from the image's query vector (:meth:`embed_queries`, given as ``queries``) nearest
        to the reference, a pose of the grid (and mirror) searched there, and refines a full affine pose of
        the box (2D: 6 entries, 3D: 12) by ``refine_steps`` steps of Adam on the embedding distance
        (:func:`~monai_pso.embed.pose_refinement.refine_poses`; linear part within :data:`REFINE_LINEAR` of the
        field's identity map, translation within :data:`REFINE_TRANSLATION`). The vector at the best pose met is
        an embedding of the image like any query vector (sampled, equalised, float32); its canonical float64
        distance to the reference is returned, never above the start pose's. Autograd runs whatever the
        caller's ``no_grad`` or ``inference_mode``.

        Examples
        --------
        >>> embedder = AlignedEmbedder(refine_steps=5)
        >>> image = torch.rand(1, 1, 28, 28)
        >>> reference = embedder.embed(torch.roll(image, 1, dims=3)).vectors  # (1, 1, 256)
        >>> queries = embedder.embed_queries(image)
        >>> grid = float(np.linalg.norm(queries.vectors[0] - reference[0], axis=1).min())
        >>> bool(embedder.refine(image, queries, reference)[0, 0] <= grid)
        True
        """
        batch = as_image_batch(images).clone()  # a normal tensor, not an inference one
        dims, grid = batch.ndim - 2, self._grid(batch.ndim - 2)
        boxes = self._field_boxes(dims, identity=False).to(batch.dtype)
        views = [batch] + [flip(batch, (axis,)) for axis in resolve_flip_axes(self.flip_axes, dims)]
        vectors = torch.from_numpy(np.asarray(queries.vectors, np.float32))
        targets = torch.from_numpy(np.ascontiguousarray(references, np.float32))  # (B, K, D)
        if vectors.shape[:2] != (len(batch), len(views) * len(boxes)) or targets.shape[0] != len(batch) or targets.shape[2] != vectors.shape[2]:
            shapes = f"queries {tuple(vectors.shape)} and references {tuple(targets.shape)}"
            raise EmbedderSettingsError(f"aligned embedder: refine got {shapes} for {len(batch)} images of {len(views)} x {len(boxes)} poses")
        gaps = torch.cdist(vectors.double(), targets.double(), compute_mode="donot_use_mm_for_euclid_dist").masked_fill(~torch.from_numpy(np.asarray(queries.valid, bool))[:, :, None], torch.inf)
        start = gaps.argmin(dim=1).flatten()  # (B * K,) nearest query vector of each pair
        owner = torch.arange(len(batch)).repeat_interleave(targets.shape[1])
        # each image smoothed on its own: a convolution's rounding depends on the batch, and the descent would carry it far
        working = torch.stack([torch.cat([self._working(view[i : i + 1], self.field, grid) for i in range(len(view))]) for view in views], dim=1)
        working = working[owner, start // len(boxes)]  # (B * K, 1, *w)
        flat_targets = targets.flatten(0, 1)

        base = F.affine_grid(torch.eye(dims, dims + 1, dtype=batch.dtype)[None], [1, 1, *[grid] * dims], align_corners=False)[0]
        base = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1)  # (*grid, dims + 1) homogeneous box coordinates

        def vectorise(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
            # affine_grid by elementwise products and short sums: no batched matrix product, whose rounding depends on the batch
            sampling = (base[None, ..., None, :] * theta.reshape(len(theta), *[1] * dims, dims, dims + 1)).sum(-1)
            values = equalised(F.grid_sample(images, sampling, mode="bilinear", padding_mode="border", align_corners=False).flatten(1))
            return values / math.sqrt(values.shape[1])

        bounds = PoseBounds(self.field, REFINE_LINEAR, REFINE_TRANSLATION)
        with torch.enable_grad():
            posed = refine_poses(working, boxes[start % len(boxes)], flat_targets, vectorise, self.refine_steps, REFINE_RATE, bounds)
        with torch.no_grad():
            found = vectorise(working, posed).numpy().astype(np.float32)
        difference = np.subtract(found, flat_targets.numpy(), dtype=np.float64)
        return np.sqrt(np.einsum("ij,ij->i", difference, difference)).reshape(targets.shape[:2])

    def _windows(self, batch: torch.Tensor, layout: TileLayout, grid: int) -> torch.Tensor:
        """``(B, W, grid**dims)``: every window of ``layout``, smoothed on its own (edges replicated, so nothing
        outside it leaks in), then resampled to ``grid`` (antialiased)."""
        return layout.cut_smoothed(batch, self.smoothing * min(layout.tile) / grid, [grid] * (batch.ndim - 2))

    def _working(self, batch: torch.Tensor, extent: float, grid: int) -> torch.Tensor:
        """The batch box-averaged by a whole factor (so every output pixel averages as many input pixels; a
        fractional one would make the averaging depend on where the image lies) while a box still spans at least
        ``grid`` pixels, then smoothed with ``smoothing`` box-grid pixels."""
        factor = max(1, int(min(batch.shape[2:]) * extent // grid))
        if factor > 1:
            batch = F.avg_pool2d(batch, factor, ceil_mode=True) if batch.ndim == 4 else F.avg_pool3d(batch, factor, ceil_mode=True)
        return smooth(batch, self.smoothing * min(batch.shape[2:]) * extent / grid)

    def _informative(self, values: torch.Tensor) -> torch.Tensor:
        """``(B, W)``: boxes with enough foreground and contrast; at least the most contrasted one per image."""
        spread = values.std(dim=2, unbiased=False)
        valid = ((values > self.background).float().mean(dim=2) >= self.min_foreground) & (spread >= self.min_std)
        valid[torch.arange(len(values)), spread.argmax(dim=1)] = True
        return valid


@functools.lru_cache(maxsize=8)
def pose_maps(field: float, dims: int, identity: bool, moves: tuple, rotations: tuple, zooms: tuple, shifts: tuple) -> torch.Tensor:
    """``(P, dims, dims + 1)`` float64 affine maps of the field under every pose of the grid (``identity``: the
    field alone), cached: every query of a guard uses the same grid.

    Examples
    --------
    >>> pose_maps(0.7, 2, False, (0.0,), (0.0, 10.0), (1.0,), (0.0,)).shape  # one move, and two turns x one zoom x one shift
    torch.Size([3, 2, 3])
    """
    if identity:
        poses = [(0.0, 1.0, (0.0,) * dims)]
    else:
        poses = [(0.0, 1.0, offsets) for offsets in itertools.product(moves, repeat=dims)]
        poses += list(itertools.product(rotations, zooms, itertools.product(shifts, repeat=dims)))
    maps = []
    for degrees, zoom, offsets in poses:
        angles = torch.zeros(1, 1 if dims == 2 else 3, dtype=torch.float64)
        turned = []
        for axis in range(angles.shape[1]) if degrees != 0.0 else [0]:
            angles.zero_()
            angles[0, axis] = math.radians(degrees)
            turned.append(rotation_matrices(angles)[0])
        for matrix in turned:
            linear = matrix * field / zoom
            maps.append(torch.cat([linear, 2.0 * torch.tensor(offsets[::-1], dtype=torch.float64)[:, None]], dim=1))
    return torch.stack(maps)


def box_sampling(theta: torch.Tensor, grid: int) -> torch.Tensor:
    """``F.affine_grid`` of the poses ``theta`` ``(P, dims, dims + 1)`` on a box of ``grid`` pixels a side, cached
    by the poses' values: every query of a guard samples the same poses (read-only; do not modify it).

    Examples
    --------
    >>> theta = pose_maps(0.7, 2, False, (0.0,), (0.0, 10.0), (1.0,), (0.0,)).float()
    >>> box_sampling(theta, 8).shape, box_sampling(theta.clone(), 8) is box_sampling(theta, 8)
    (torch.Size([3, 8, 8, 2]), True)
    """
    return _box_sampling(theta.detach().cpu().contiguous().numpy().tobytes(), tuple(theta.shape), str(theta.dtype), grid).to(theta.device)


@functools.lru_cache(maxsize=8)
def _box_sampling(theta: bytes, shape: tuple[int, ...], dtype: str, grid: int) -> torch.Tensor:
    values = torch.from_numpy(np.frombuffer(theta, dtype=np.dtype(dtype.removeprefix("torch."))).reshape(shape).copy())
    return F.affine_grid(values, [shape[0], 1, *[grid] * (shape[1])], align_corners=False)


def equalised(values: torch.Tensor, knots: int = 17) -> torch.Tensor:
    """Values mapped through their own piecewise-linear distribution function: a smooth histogram equalisation.

    The ``knots`` quantiles of each vector (last axis) go to ``0, 1 / (knots - 1), ..., 1`` and values
    between them are interpolated linearly. Any increasing intensity curve that is nearly linear
    between neighbouring quantiles (gamma, contrast, brightness) leaves the result nearly unchanged,
    and, unlike exact ranks, a small change of a value changes its result only a little.

    Examples
    --------
    >>> x = torch.rand(1, 256)
    >>> bool((equalised(x) - equalised(x ** 2)).abs().max() < 0.02), round(float(equalised(x).min()), 4), round(float(equalised(x).max()), 4)
    (True, 0.0, 1.0)
    """
    levels = torch.linspace(0.0, 1.0, knots, dtype=values.dtype, device=values.device)
    # NumPy's SIMD sort: many times torch's on a CPU; the knots carry no gradient (pose refinement follows the values)
    ordered = torch.from_numpy(np.sort(values.detach().cpu().numpy(), axis=-1)).to(values.device)
    position = levels * (values.shape[-1] - 1)
    below, above = position.floor().long(), position.ceil().long()
    quantiles = torch.lerp(ordered[..., below], ordered[..., above], position - below)  # (..., knots): torch.quantile's linear rule
    quantiles = quantiles + levels * 1e-6  # strictly increasing where values are flat
    segment = torch.searchsorted(quantiles, values.contiguous()).clamp(1, knots - 1)
    low, high = quantiles.gather(-1, segment - 1), quantiles.gather(-1, segment)
    where = ((values - low) / (high - low)).clamp(0.0, 1.0)
    return ((segment - 1).to(values.dtype) + where) / (knots - 1)


def window_layout(shape: Sequence[int], share: float, stride: int, scaled: bool = True) -> TileLayout:
    """Windows of ``share`` of each side of an image of ``shape``, every ``stride`` pixels (times
    ``ceil(smallest side / 32)`` where ``scaled``) and at the far edge.

    Examples
    --------
    >>> layout = window_layout((28, 28), 0.43, 2)
    >>> layout.tile, layout.starts[0]
    ((12, 12), (0, 2, 4, 6, 8, 10, 12, 14, 16))
    >>> window_layout((64, 64), 0.43, 1).starts[0][:3], window_layout((64, 64), 0.43, 1, scaled=False).starts[0][:3]
    ((0, 2, 4), (0, 1, 2))
    """
    tile = tuple(max(1, round(share * n)) for n in shape)
    step = stride * (math.ceil(min(shape) / 32) if scaled else 1)
    starts = tuple(tuple(sorted(set(range(0, n - t + 1, step)) | {n - t})) for n, t in zip(shape, tile))
    return TileLayout(tuple(int(n) for n in shape), tile, starts)
