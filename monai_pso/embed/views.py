"""Extra query-side views: small translations, in-plane rotations and intensity changes undone.

A synthetic image that is a training image moved by a pixel or two, or turned by a few degrees, is
a copy; in pixel space it can nevertheless lie as far from its source as images of two different
patients do (measured on PneumoniaMNIST: a 5 degree turn moves a chest X-ray by 0.068 RMS, the 5th
percentile of distances between different patients is 0.042). So the guard measures the distance
of every *view* of the image: each integer translation of up to ``max_shift`` pixels per axis
(borders replicated) of each rotation in ``rotations`` (degrees, about the image centre, in the plane
of the last two spatial axes; bilinear, borders replicated) and of the image itself, and, for each
``(gain, offset)`` in ``intensity``, the image with that intensity change undone
(``clip((v - offset) / gain, 0, 1)``, a re-exposed copy), each through the embedder's own query side
(which adds flips). The families are joined, not multiplied (a turned *and* re-exposed copy is not
undone in one view). The distance to the training set is the minimum over all views' valid vectors,
the package's distance contract applied to a larger set of query vectors.

The views are part of the threshold (:class:`~monai_pso.calibrate.Threshold` records them), so
calibration and the gate always measure with the same views.

Examples
--------
>>> views = QueryViews(max_shift=1, rotations=(-5.0, 5.0), intensity=((0.9, 0.05),))
>>> views.count(2), views.count(3)
(28, 82)
>>> batch = torch.rand(2, 1, 8, 8)
>>> [tuple(v.shape) for v in views.images(batch)][:2]
[(2, 1, 8, 8), (2, 1, 8, 8)]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from monai_pso.embed.base import Embedder, Embedding
from monai_pso.errors import ConfigurationError


@dataclass(frozen=True)
class QueryViews:
    """Translations up to ``max_shift`` pixels per axis, of the image and of its turns by ``rotations`` degrees.

    Parameters
    ----------
    max_shift
        Largest translation, in image pixels, along each spatial axis (every integer offset in
        ``[-max_shift, max_shift]``); ``0``: none.
    rotations
        Turns in degrees besides ``0`` (in the plane of the last two spatial axes).
    intensity
        ``(gain, offset)`` intensity changes to undo, besides ``(1, 0)``.
    """

    max_shift: int = 0
    rotations: tuple[float, ...] = ()
    intensity: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.max_shift < 0:
            raise ConfigurationError(f"max_shift={self.max_shift!r}: must be >= 0")
        object.__setattr__(self, "rotations", tuple(float(r) for r in self.rotations if float(r) != 0.0))
        changes = tuple((float(g), float(o)) for g, o in self.intensity if (float(g), float(o)) != (1.0, 0.0))
        if any(g <= 0 for g, _ in changes):
            raise ConfigurationError(f"intensity={changes}: gains must be positive")
        object.__setattr__(self, "intensity", changes)

    def count(self, spatial_dims: int) -> int:
        """Number of views of one image (the image itself included)."""
        return (1 + len(self.rotations)) * (2 * self.max_shift + 1) ** spatial_dims + len(self.intensity)

    def images(self, batch: torch.Tensor) -> Iterator[torch.Tensor]:
        """Every view of ``batch`` ``(B, 1, *spatial)``; the unchanged batch first."""
        dims = batch.ndim - 2
        for degrees in (0.0,) + self.rotations:
            turned = rotate(batch, degrees)
            for offsets in itertools.product(range(-self.max_shift, self.max_shift + 1), repeat=dims):
                yield translate(turned, offsets)
        for gain, offset in self.intensity:
            yield undo_exposure(batch, gain, offset)

    def embed(self, embedder: Embedder, batch: torch.Tensor) -> Embedding:
        """The embedder's query-side vectors of every view, side by side on the ``T`` axis (in the order of :meth:`images`).

        An embedder with ``embed_translations`` (the ``pixel`` embedder) embeds all translations of an image
        (or of a turn of it) in one call, with the same vectors.
        """
        translations = getattr(embedder, "embed_translations", None)
        if translations is None:
            return Embedding.concat([embedder.embed_queries(view) for view in self.images(batch)])
        moved = [translations(rotate(batch, degrees), self.max_shift) for degrees in (0.0,) + self.rotations]
        return Embedding.concat(moved + [translations(undo_exposure(batch, gain, offset), 0) for gain, offset in self.intensity])

    def to_dict(self) -> dict[str, Any]:
        return {"max_shift": self.max_shift, "rotations": list(self.rotations), "intensity": [list(c) for c in self.intensity]}

    @classmethod
    def from_dict(cls, content: dict[str, Any] | None) -> QueryViews:
        content = dict(content or {})
        content["intensity"] = tuple(tuple(c) for c in content.get("intensity", ()))
        content["rotations"] = tuple(content.get("rotations", ()))
        return cls(**content)


def refines_poses(embedder: Embedder, views: QueryViews | None) -> bool:
    """Whether the embedder's pose refinement (``refine``) applies: it refines, and ``views`` add nothing to
    its own query side (the refinement starts from the poses of :meth:`~monai_pso.embed.base.Embedder.embed_queries`).

    Examples
    --------
    >>> from monai_pso.embed.aligned import AlignedEmbedder
    >>> refines_poses(AlignedEmbedder(), None), refines_poses(AlignedEmbedder(), QueryViews(max_shift=1)), refines_poses(AlignedEmbedder(windows=True), None)
    (True, False, False)
    """
    return bool(getattr(embedder, "refines", False)) and (views is None or views == QueryViews())


def default_query_views(embedder: Embedder, spatial_dims: int) -> QueryViews:
    """The views the guard uses by default for ``embedder``.

    Whole-image embedders: translations of 1 pixel, in 2D turns of 2.5 and 5 degrees either way, and
    gains of 0.9 / 1.1 with offsets of -0.05 / 0 / 0.05 undone (rotated, re-exposed and noisy copies are
    caught on the whole image). Tile embedders
    (``tiles`` or ``tile_size`` set): translations of up to 2 pixels (1 in 3D) and no turns (the tiles
    inside the image see a shifted copy exactly; turning every tile would multiply the vectors for
    little gain). Embedders that search poses themselves (``searches_poses``: the ``aligned``
    embedder of the copy checks) get no views besides their own query side.

    Examples
    --------
    >>> from monai_pso.embed.pixel import PixelEmbedder
    >>> default_query_views(PixelEmbedder(), 2).count(2), default_query_views(PixelEmbedder(tiles=3), 2)
    (53, QueryViews(max_shift=2, rotations=(), intensity=()))
    """
    if getattr(embedder, "searches_poses", False):
        return QueryViews()
    if getattr(embedder, "tiled", False):
        return QueryViews(max_shift=2 if spatial_dims == 2 else 1)
    intensity = tuple((gain, offset) for gain in (0.9, 1.0, 1.1) for offset in (-0.05, 0.0, 0.05))
    return QueryViews(max_shift=1, rotations=(-5.0, -2.5, 2.5, 5.0) if spatial_dims == 2 else (), intensity=intensity)


def undo_exposure(batch: torch.Tensor, gain: float, offset: float) -> torch.Tensor:
    """``clip((batch - offset) / gain, 0, 1)``: a re-exposed copy's change undone.

    Examples
    --------
    >>> undo_exposure(torch.tensor([0.0, 0.5, 1.0]), 0.5, 0.25).tolist()
    [0.0, 0.5, 1.0]
    """
    return (batch - offset).div_(gain).clamp_(0.0, 1.0)


def translate(batch: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """``batch`` moved by integer ``offsets`` (one per spatial axis), borders replicated.

    Examples
    --------
    >>> translate(torch.arange(4.0).reshape(1, 1, 1, 4), (0, 1)).flatten().tolist()
    [0.0, 0.0, 1.0, 2.0]
    """
    margin = max((abs(o) for o in offsets), default=0)
    if margin == 0:
        return batch
    padded = F.pad(batch, [margin] * (2 * len(offsets)), mode="replicate")
    window = tuple(slice(margin - o, margin - o + n) for o, n in zip(offsets, batch.shape[2:]))
    return padded[(slice(None), slice(None)) + window]


def rotate(batch: torch.Tensor, degrees: float) -> torch.Tensor:
    """``batch`` turned by ``degrees`` about its centre in the plane of the last two spatial axes.

    Bilinear, borders replicated, in pixel units (non-square images turn without shearing).

    Examples
    --------
    >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 4] = 1.0
    >>> divmod(int(rotate(x, 90.0)[0, 0].argmax()), 5)  # the pixel right of the centre moves above it
    (0, 2)
    """
    if degrees == 0.0:
        return batch
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    height, width = batch.shape[-2:]
    theta = torch.tensor([[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]], dtype=batch.dtype, device=batch.device)
    planes = batch.reshape(-1, 1, height, width)
    grid = F.affine_grid(theta.expand(len(planes), 2, 3), list(planes.shape), align_corners=False)
    turned = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return turned.reshape(batch.shape)
