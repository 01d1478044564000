"""Helpers shared by the guard tests: planted near-copies, an independent brute-force distance, a small guard, a failing generator."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from monai_pso.data import DataSource, load_image
from monai_pso.embed.base import Embedding
from monai_pso.embed.views import refines_poses
from monai_pso.guard.checker import PrivacyChecker


def planted_copies(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Near-copies of a training ``image`` ``(1, H, W)`` in ``[0, 1]``; ``other`` receives a pasted region.

    Exact copy, mirror image, whole-pixel shifts of 1 and of 2 to 3 pixels (borders replicated), turns of
    2 to 4 and of 4 to 8 degrees, Gaussian noise (sigma 0.02 to 0.04), intensity scale (0.85 to 0.95) and
    offset (0 to 0.08), and a half-size region of ``image`` pasted into ``other``, each place at random:
    every magnitude, sign and place drawn per copy (scipy.ndimage, none of the guard's poses or views).
    """
    plane = image[0].astype(np.float64)
    height, width = plane.shape
    pasted = other[0].astype(np.float64).copy()
    (sy, sx), (ty, tx) = (rng.integers(0, (height - height // 2 + 1, width - width // 2 + 1)) for _ in range(2))
    pasted[ty : ty + height // 2, tx : tx + width // 2] = plane[sy : sy + height // 2, sx : sx + width // 2]

    def sign() -> float:
        return float(rng.choice([-1.0, 1.0]))

    copies = {
        "copy": plane,
        "hflip": plane[:, ::-1],
        "shift_1px": ndimage.shift(plane, rng.permutation([0.0, sign()]), order=0, mode="nearest"),
        "shift_2_3px": ndimage.shift(plane, (sign() * rng.integers(2, 4), sign() * rng.integers(1, 4)), order=0, mode="nearest"),
        "rotate_2_4deg": ndimage.rotate(plane, sign() * rng.uniform(2.0, 4.0), reshape=False, order=1, mode="nearest"),
        "rotate_4_8deg": ndimage.rotate(plane, sign() * rng.uniform(4.0, 8.0), reshape=False, order=1, mode="nearest"),
        "noise": plane + rng.normal(0.0, rng.uniform(0.02, 0.04), plane.shape),
        "scale_offset": plane * rng.uniform(0.85, 0.95) + rng.uniform(0.0, 0.08),
        "pasted_patch": pasted,
    }
    return {name: np.clip(c, 0.0, 1.0).astype(np.float32)[None] for name, c in copies.items()}


def planted_set(train: DataSource, n_sources: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Near-copies of ``n_sources`` random training images: their kind and the images ``(N, 1, H, W)``."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(train), size=min(n_sources, len(train)), replace=False)
    kinds, images = [], []
    for i in picks:
        other = load_image(train[(int(i) + len(train) // 2) % len(train)])
        for kind, image in planted_copies(load_image(train[int(i)]), other, rng).items():
            kinds.append(kind)
            images.append(image)
    return kinds, np.stack(images)


def recall_by_kind(kinds: list[str], released: np.ndarray) -> dict[str, float]:
    """Share of each kind of near-copy that was rejected."""
    kinds_arr = np.array(kinds)
    return {kind: float(np.mean(~released[kinds_arr == kind])) for kind in dict.fromkeys(kinds)}


def brute_force_released(checker: PrivacyChecker, train_images: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The guard's decisions recomputed without the index: every query view against every training vector, float64.

    Each query vector's nearest training vector is found over all of them (float64 products), then its
    distance is re-measured from the differences, so exact copies come out at exactly 0. A check whose
    embedder refines poses (the ``copy`` check) refines against the brute-force nearest training vectors
    of the query vector attaining that distance, as the guard does.

    Returns whether each query passes every check, and the per-check distances.
    """
    distances = {}
    passed = np.ones(len(queries), bool)
    for check in checker.checks:
        embedder, views = check.embedder, check.threshold.views
        reference = embedder.embed(train_images)
        refs = reference.vectors[reference.valid].astype(np.float64)  # (R, D)
        with torch.no_grad():
            query = views.embed(embedder, torch.as_tensor(queries))
        ref_norms = (refs**2).sum(axis=1)
        out = np.empty(len(queries))
        for i in range(len(queries)):
            vectors = query.vectors[i][query.valid[i]].astype(np.float64)  # (V, D)
            nearest = ((vectors**2).sum(axis=1)[:, None] + ref_norms[None, :] - 2.0 * vectors @ refs.T).argmin(axis=1)
            gaps = np.sqrt(((vectors - refs[nearest]) ** 2).sum(axis=1))  # re-measured from differences
            out[i] = gaps.min()
            if refines_poses(embedder, views):  # the copy check's refinement, against the seed vector's nearest training vectors
                candidates = np.argsort(((refs - vectors[gaps.argmin()]) ** 2).sum(axis=1), kind="stable")[: embedder.refine_candidates]
                one = Embedding(query.vectors[i : i + 1], query.valid[i : i + 1])
                out[i] = min(out[i], embedder.refine(queries[i : i + 1], one, refs[candidates][None].astype(np.float32)).min())
        distances[check.name] = out
        passed &= out >= check.tau
    return passed, distances


def small_guard(source: DataSource, hasher=None) -> PrivacyChecker:
    """A one-check guard (whole-image pixel, 1 pixel translations) for tests of the plumbing."""
    from monai_pso.calibrate import calibrate_threshold
    from monai_pso.embed.pixel import PixelEmbedder
    from monai_pso.embed.views import QueryViews
    from monai_pso.guard.checker import GuardCheck
    from monai_pso.index import build_index

    embedder = PixelEmbedder()
    index = build_index(source, embedder, progress=False)
    threshold = calibrate_threshold(index, embedder, source, views=QueryViews(max_shift=1), n_bootstrap=100, progress=False)
    return PrivacyChecker(GuardCheck.create(index, threshold, embedder), hasher)


#: 15 training and 12 held-out patients, three re-scan-like acquisitions each (pose, intensity drift, noise):
#: enough held-out patients for the same-patient AUC criterion of calibration.
CALIBRATION_SOURCE = "phantom:2d?patients=30&acquisitions=3&size=32&seed=3&ratios=0.5,0.4,0.1"


def pixel_indexed(source: str = CALIBRATION_SOURCE):
    """``(source, embedder, index)``: the pixel index of ``source``'s train split."""
    from monai_pso.data import load_source
    from monai_pso.embed.pixel import PixelEmbedder
    from monai_pso.index import build_index

    loaded, embedder = load_source(source), PixelEmbedder()
    return loaded, embedder, build_index(loaded, embedder, progress=False)


def generator_failures(real: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What a failing generator draws, magnitudes at random: one image per real image and family."""
    n, shape = len(real), real.shape[2:]
    per_image = (n,) + (1,) * (real.ndim - 1)  # one magnitude per image, broadcast over its voxels
    blobs = []
    for _ in range(n):
        blob = ndimage.gaussian_filter(rng.random(shape), rng.uniform(1.5, 5.0))
        blobs.append(((blob - blob.min()) / (blob.max() - blob.min() + 1e-9))[None])
    families = {
        "heavy_blur": np.stack([ndimage.gaussian_filter(x[0], rng.uniform(2.5, 6.0))[None] for x in real]),
        "blobs": np.stack(blobs),
        "uniform_noise": rng.random(real.shape),
        "flat": np.ones(real.shape) * rng.uniform(0.05, 0.95, per_image),
        "noisy_real": real + rng.normal(0.0, 1.0, real.shape) * rng.uniform(0.15, 0.35, per_image),
    }
    return {name: np.clip(images, 0.0, 1.0).astype(np.float32) for name, images in families.items()}
