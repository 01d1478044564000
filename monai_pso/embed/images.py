"""Image batches as the embedders see them: checked, clipped, resampled, smoothed and flipped.

Every embedder starts from :func:`as_image_batch`, so all of them accept the same inputs (tensors or
arrays ``(B, 1, *spatial)``, or a list of ``(1, *spatial)`` arrays of one shape) and refuse the same
bad ones with :class:`~monai_pso.errors.ImageValueError`.

Examples
--------
>>> batch = as_image_batch(np.random.rand(2, 1, 64, 48))
>>> resample(batch, (32, 32)).shape
torch.Size([2, 1, 32, 32])
>>> flip(batch, (1,)).shape == batch.shape
True
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import gaussian_1d, separable_filtering

from monai_pso.embed.base import Embedding
from monai_pso.errors import EmbedderSettingsError, ImageValueError

#: Anything :func:`as_image_batch` accepts.
ImageBatch = torch.Tensor | np.ndarray | Sequence[np.ndarray]


def as_image_batch(images: ImageBatch, name: str = "images") -> torch.Tensor:
    """Check a batch and return it as float32 ``(B, 1, *spatial)`` on its device, clipped to ``[0, 1]``.

    Parameters
    ----------
    images
        A tensor or array ``(B, 1, *spatial)`` with 2 or 3 spatial axes, or a list of ``(1, *spatial)``
        arrays of one shape.
    name
        What to call the argument in error messages.

    Raises
    ------
    ImageValueError
        Wrong number of axes or channels, an empty batch, or NaN / Inf values.

    Examples
    --------
    >>> as_image_batch([np.full((1, 4, 4), 2.0)]).max().item()
    1.0
    """
    if isinstance(images, (list, tuple)):
        shapes = {tuple(np.shape(image)) for image in images}
        if len(shapes) > 1:
            raise ImageValueError(f"{name}: images of one batch must share a shape, got {sorted(shapes)}")
        images = np.stack([np.asarray(image) for image in images]) if images else np.zeros((0,))
    batch = torch.as_tensor(images).float()
    if batch.ndim not in (4, 5) or batch.shape[1] != 1 or batch.shape[0] == 0:
        raise ImageValueError(f"{name}: expected a non-empty batch (B, 1, *spatial) with 2 or 3 spatial axes, got shape {tuple(batch.shape)}")
    if not torch.isfinite(torch.stack(torch.aminmax(batch))).all():  # NaN propagates into both; one pass, no mask
        raise ImageValueError(f"{name}: contains NaN or Inf values")
    return batch.clamp(0.0, 1.0)


def spatial_shape(size: int | Sequence[int], spatial_dims: int, name: str = "size") -> tuple[int, ...]:
    """``size`` as one length per spatial axis (an int is repeated).

    Examples
    --------
    >>> spatial_shape(16, 3), spatial_shape((32, 24), 2)
    ((16, 16, 16), (32, 24))
    """
    shape = (int(size),) * spatial_dims if np.isscalar(size) else tuple(int(s) for s in size)
    if len(shape) != spatial_dims or min(shape) < 1:
        raise EmbedderSettingsError(f"{name}={size!r} does not fit {spatial_dims}D images (one positive length per axis)")
    return shape


def resample(batch: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample ``(B, C, *spatial)`` to ``shape`` without aliasing.

    Axes that shrink are averaged over the input pixels each output pixel covers (``area``: a box
    filter, the antialiased downsampling); axes that grow are then linearly interpolated
    (``align_corners=False``). Resampling to the same shape returns the batch unchanged.

    Examples
    --------
    >>> resample(torch.ones(1, 1, 5, 40), (10, 10)).shape
    torch.Size([1, 1, 10, 10])
    """
    shape = tuple(int(s) for s in shape)
    current = tuple(batch.shape[2:])
    shrunk = tuple(min(c, s) for c, s in zip(current, shape))
    if shrunk != current:
        batch = F.interpolate(batch, size=shrunk, mode="area")
    if shrunk != shape:
        batch = F.interpolate(batch, size=shape, mode="bilinear" if len(shape) == 2 else "trilinear", align_corners=False)
    return batch


def smooth(batch: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of ``(B, C, *spatial)`` with ``sigma`` pixels on every axis (edges replicated).

    ``sigma=0`` returns the batch unchanged.

    Examples
    --------
    >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1.0
    >>> round(smooth(x, 1.0).sum().item(), 4), smooth(x, 1.0).max().item() < 1.0
    (1.0, True)
    """
    if sigma <= 0:
        return batch
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=3.0, normalize=True).to(batch)
    return separable_filtering(batch, [kernel] * (batch.ndim - 2), mode="replicate")


@functools.lru_cache(maxsize=64)
def axis_operator(length: int, size: int, sigma: float) -> torch.Tensor:
    """``(size, length)`` float64: one axis of :func:`smooth` (``sigma``, edges replicated), then :func:`resample`
    from ``length`` to ``size`` pixels.

    Both are separable, so along every axis of an image they are this matrix. It is read off the two
    functions themselves: an image constant along its second axis stays constant there, so column ``i``
    is their result for a unit line at row ``i``.

    Examples
    --------
    >>> operator = axis_operator(12, 6, 2.0)
    >>> tuple(operator.shape), bool(torch.allclose(operator.sum(dim=1), torch.ones(6, dtype=torch.float64)))
    ((6, 12), True)
    """
    basis = torch.eye(length, dtype=torch.float64)[:, None, :, None].expand(length, 1, length, length)
    return resample(smooth(basis, sigma), [size, length])[:, 0, :, 0].T.contiguous()


def resampled_translations(batch: torch.Tensor, max_shift: int, shape: Sequence[int]) -> torch.Tensor:
    """``(B, V, 1, *shape)``: :func:`resample` to ``shape`` of every integer translation of ``batch`` by up to
    ``max_shift`` pixels per axis (borders replicated, as ``monai_pso.embed.views.translate``); the ``V`` views
    in the order of ``itertools.product`` of the offsets.

    Moving with replicated borders and area resampling are separable linear maps, so each axis is one
    stack of matrices (one per offset) applied to the whole batch: the same values as moving and
    resampling image by image, at a small share of the cost for large images.

    Examples
    --------
    >>> views = resampled_translations(torch.rand(2, 1, 40, 30), 1, (8, 8))
    >>> tuple(views.shape)
    (2, 9, 1, 8, 8)
    """
    dims, moves = batch.ndim - 2, 2 * max_shift + 1
    values = batch[:, 0]
    for axis in reversed(range(dims)):  # the last axis first: it is contiguous, and the volume shrinks before it is moved
        stack = translation_operator(int(batch.shape[2 + axis]), int(shape[axis]), max_shift).to(values)
        values = torch.movedim(torch.movedim(values, 1 + axis, -1) @ stack.T, -1, 1 + axis)
    grouped = values.reshape(len(batch), *itertools.chain.from_iterable((moves, int(s)) for s in shape))
    order = [0] + [1 + 2 * a for a in range(dims)] + [2 + 2 * a for a in range(dims)]
    return grouped.permute(order).reshape(len(batch), moves**dims, 1, *[int(s) for s in shape])


def mirrored_translations(views: torch.Tensor, axis: int) -> torch.Tensor:
    """:func:`resampled_translations` ``(B, V, 1, *shape)`` of the images into the views mirrored along spatial
    ``axis`` after moving (:func:`flip` of each moved image, then resampled).

    Area resampling and linear interpolation commute with mirroring, so each is its view mirrored.

    Examples
    --------
    >>> image = torch.rand(1, 1, 12, 10)
    >>> views = mirrored_translations(resampled_translations(image, 1, (6, 5)), 1)
    >>> bool(torch.allclose(views[:, 4], resample(flip(image, (1,)), (6, 5))))  # the unmoved view: the mirror image resampled
    True
    """
    return views.flip(3 + axis)


@functools.lru_cache(maxsize=64)
def translation_operator(length: int, size: int, max_shift: int) -> torch.Tensor:
    """``(V * size, length)`` float64, ``V = 2 max_shift + 1``: one axis of moving by each offset ``-max_shift ..
    max_shift`` (borders replicated), then :func:`resample` to ``size`` pixels.

    Examples
    --------
    >>> translation_operator(4, 4, 1)[4:8].equal(torch.eye(4, dtype=torch.float64))  # the middle offset is 0
    True
    """
    offsets = torch.arange(-max_shift, max_shift + 1)
    source = (torch.arange(length)[None, :] - offsets[:, None]).clamp(0, length - 1)  # (V, length): where each moved pixel comes from
    moved = torch.zeros(len(offsets), length, length, dtype=torch.float64).scatter_(2, source[:, :, None], 1.0)  # (V, out, in)
    return (axis_operator(length, size, 0.0) @ moved).reshape(-1, length)


def default_flip_axes(spatial_dims: int) -> tuple[int, ...]:
    """The spatial axes that may be left-right in each reader's array order.

    2D images (PNG, JPEG, DICOM, MedMNIST) are ``(rows, columns)``: left-right is axis 1. 3D volumes
    are ``(i, j, k)`` from NIfTI (left-right is axis 0 in RAS/LAS) or ``(slices, rows, columns)``
    from DICOM (axis 2), so both are flipped, one view each.

    Examples
    --------
    >>> default_flip_axes(2), default_flip_axes(3)
    ((1,), (0, 2))
    """
    return (1,) if spatial_dims == 2 else (0, 2)


def resolve_flip_axes(flip_axes: Sequence[int] | None, spatial_dims: int) -> tuple[int, ...]:
    """``flip_axes`` checked against ``spatial_dims`` (``None``: :func:`default_flip_axes`).

    Examples
    --------
    >>> resolve_flip_axes(None, 2), resolve_flip_axes([], 3), resolve_flip_axes([0, 1], 2)
    ((1,), (), (0, 1))
    """
    if flip_axes is None:
        return default_flip_axes(spatial_dims)
    axes = tuple(int(a) for a in flip_axes)
    if any(not 0 <= a < spatial_dims for a in axes):
        raise EmbedderSettingsError(f"flip_axes={list(axes)} must be spatial axes 0..{spatial_dims - 1} of {spatial_dims}D images")
    return axes


def flip(batch: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """``(B, C, *spatial)`` mirrored along the given spatial axes (0 is the first spatial axis).

    Examples
    --------
    >>> flip(torch.arange(4.0).reshape(1, 1, 2, 2), (1,)).flatten().tolist()
    [1.0, 0.0, 3.0, 2.0]
    """
    return torch.flip(batch, dims=[2 + a for a in axes])


def embed_with_flips(embed: Callable[[torch.Tensor], Embedding], images: ImageBatch, flip_axes: Sequence[int] | None) -> Embedding:
    """Query-side embedding: ``embed`` of the batch, then of its mirror image along each flip axis.

    The views sit side by side on the ``T`` axis (original first), so a flipped copy of a reference
    image is as close as the original: the distance is the minimum over all valid vectors.

    Examples
    --------
    >>> views = embed_with_flips(lambda b: Embedding.single(b.flatten(1).numpy()), np.random.rand(2, 1, 4, 4), None)
    >>> views.vectors.shape
    (2, 2, 16)
    """
    batch = as_image_batch(images)
    axes = resolve_flip_axes(flip_axes, batch.ndim - 2)
    return Embedding.concat([embed(batch)] + [embed(flip(batch, (axis,))) for axis in axes])
