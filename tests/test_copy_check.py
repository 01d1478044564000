"""The copy checks: the ``aligned`` embedder rebuilds from its settings with its fingerprint, is blind to
monotone intensity changes and finds moved copies; the default guard refuses near-copies made
independently of it and releases unseen images.

Near-copies come from ``benchmarks/near_copies.py`` (scipy.ndimage, PIL and numpy; none of the guard's
poses or views), each magnitude drawn at random per copy; ``benchmarks/copy_recall.py`` measures the
same at full size on real data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from monai_pso.data import DataSource, load_image, load_source
from monai_pso.embed.aligned import AlignedEmbedder
from monai_pso.embed.distance import image_distances
from monai_pso.embed.registry import embedder_from_settings, load_embedder
from monai_pso.errors import EmbedderSettingsError, FingerprintMismatchError
from monai_pso.guard import build_guard, load_checker, read_guard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from near_copies import FAMILIES, near_copy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, 1, size, size)`` smooth random images in ``[0, 1]`` (different images, different blobs)."""
    images = np.stack([ndimage.gaussian_filter(rng.random((size, size)), size / 10) for _ in range(count)])
    low, high = images.min(axis=(1, 2), keepdims=True), images.max(axis=(1, 2), keepdims=True)
    return ((images - low) / (high - low))[:, None].astype(np.float32)


def test_aligned_embedder_rebuilds_from_settings_and_saves_with_its_fingerprint(tmp_path):
    rng = np.random.default_rng(0)
    images = _blobs(3, 28, rng)
    for windows in (False, True):
        embedder = AlignedEmbedder(windows=windows, field=float(rng.uniform(0.6, 0.8)))
        rebuilt = embedder_from_settings(embedder.settings, expected_fingerprint=embedder.fingerprint)
        np.testing.assert_array_equal(rebuilt.embed_queries(images).vectors, embedder.embed_queries(images).vectors)
        embedder.save(tmp_path / str(windows))
        assert load_embedder(tmp_path / str(windows)).fingerprint == embedder.fingerprint
        with pytest.raises(FingerprintMismatchError):
            embedder_from_settings({**embedder.settings, "field": 0.5}, expected_fingerprint=embedder.fingerprint)
    assert AlignedEmbedder().fingerprint != AlignedEmbedder(windows=True).fingerprint
    with pytest.raises(EmbedderSettingsError):
        AlignedEmbedder(zooms=(0.0, 1.0))


def test_aligned_distance_is_blind_to_monotone_intensity_changes_and_finds_moves():
    rng = np.random.default_rng(1)
    images = _blobs(12, 32, rng)
    embedder = AlignedEmbedder()
    strangers = image_distances(embedder.embed_queries(images), embedder.embed(images))
    nearest_stranger = np.sort(strangers, axis=1)[:, 1].min()
    gamma = float(np.exp(rng.uniform(-0.7, 0.7)))
    changed = np.clip(images, 0, 1) ** gamma * rng.uniform(0.6, 1.0) + rng.uniform(0.0, 0.1)
    moved = np.stack([ndimage.shift(image[0], rng.uniform(-3.5, 3.5, 2), order=1, mode="nearest")[None] for image in images])
    for copies in (changed, moved):
        own = np.diag(image_distances(embedder.embed_queries(np.clip(copies, 0, 1).astype(np.float32)), embedder.embed(images)))
        assert own.max() < 0.5 * nearest_stranger, (own.max(), nearest_stranger)


def test_aligned_3d_finds_moved_and_re_exposed_volumes_and_pasted_blocks():
    rng = np.random.default_rng(3)
    volumes = np.stack([ndimage.gaussian_filter(rng.random((20, 20, 20)), 2.0) for _ in range(12)])
    volumes = ((volumes - volumes.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(volumes, axis=(1, 2, 3), keepdims=True))[:, None].astype(np.float32)
    volumes, canvases = volumes[:6], volumes[6:]  # the training volumes, and unseen ones the blocks are pasted on
    field, windows = AlignedEmbedder(), AlignedEmbedder(windows=True)
    strangers = np.sort(image_distances(field.embed_queries(volumes), field.embed(volumes)), axis=1)[:, 1].min()
    moved = np.stack([(ndimage.shift(v[0], rng.uniform(-1.5, 1.5, 3), order=1, mode="nearest") ** float(np.exp(rng.uniform(-0.5, 0.5))))[None] for v in volumes])
    own = np.diag(image_distances(field.embed_queries(np.clip(moved, 0, 1).astype(np.float32)), field.embed(volumes)))
    assert own.max() < 0.5 * strangers, (own.max(), strangers)
    # a box of 50-70% of each side (more than a window plus a reference stride; an eighth of the volume or
    # more) from a random place of each training volume, pasted at a random place of an unseen one: off the
    # window grids it is matched a voxel or so off, yet its source is its nearest training volume and it
    # lies nearer than every unseen volume does
    blobs = np.stack([ndimage.gaussian_filter(rng.random((28, 28, 28)), 2.0) for _ in range(12)])
    blobs = ((blobs - blobs.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(blobs, axis=(1, 2, 3), keepdims=True))[:, None].astype(np.float32)
    training, canvases = blobs[:6], blobs[6:]
    pasted = canvases.copy()
    for copy, volume in zip(pasted, training):
        side = np.round(rng.uniform(0.5, 0.7, 3) * 28).astype(int)
        source, target = ([slice(p, p + s) for p, s in zip(rng.integers(0, 29 - side), side)] for _ in range(2))
        copy[(0, *target)] = volume[(0, *source)]
    distances = image_distances(windows.embed_queries(pasted), windows.embed(training))
    own, others = np.diag(distances), np.where(np.eye(len(training), dtype=bool), np.inf, distances).min(axis=1)
    unseen = image_distances(windows.embed_queries(canvases), windows.embed(training)).min(axis=1)
    assert (own < others).all() and own.max() < unseen.min(), (own, others, unseen)
    # the same boxes defeat the first window geometry (half the side, every 7 voxels): the boxes are not too easy
    first = AlignedEmbedder(windows=True, window_geometry=1)
    own_first = np.diag(image_distances(first.embed_queries(pasted), first.embed(training)))
    assert own_first.max() >= image_distances(first.embed_queries(canvases), first.embed(training)).min(axis=1).min()


def test_regions_pasted_anywhere_on_64_pixel_images_meet_a_training_window_exactly():
    """A region of half a side or more of a 64-pixel training image, pasted at a random whole-pixel place of an
    unseen image, holds a query window equal to a training window (dense query side); with the scaled query
    stride of earlier embedders (``dense_queries=0``) only even offsets do."""
    rng = np.random.default_rng(64)
    images = _blobs(16, 64, rng)
    training, canvases = images[:8], images[8:]
    pasted, odd = canvases.copy(), []
    for copy, image in zip(pasted, training):
        side = rng.integers(32, 45, 2)  # 50-70% of each side
        source, target = rng.integers(0, 65 - side), rng.integers(0, 65 - side)
        copy[0, target[0] : target[0] + side[0], target[1] : target[1] + side[1]] = image[0, source[0] : source[0] + side[0], source[1] : source[1] + side[1]]
        odd.append(bool(((target - source) % 2).any()))
    dense, scaled = AlignedEmbedder(windows=True), AlignedEmbedder(windows=True, dense_queries=0)
    references = dense.embed(training)
    own = np.diag(image_distances(dense.embed_queries(pasted), references))
    unseen = image_distances(dense.embed_queries(canvases), references).min(axis=1)
    assert own.max() < 1e-6 < unseen.min(), (own, unseen)
    sparse = np.diag(image_distances(scaled.embed_queries(pasted), references))
    assert any(odd) and (sparse[np.array(odd)] > 1e-6).all(), (sparse, odd)
    assert embedder_from_settings({k: v for k, v in dense.settings.items() if k != "dense_queries"}).settings == scaled.settings


def test_window_mode_counts_informative_windows_only():
    image = np.zeros((1, 1, 32, 32), np.float32)
    image[0, 0, :16, :16] = _blobs(1, 16, np.random.default_rng(2))[0, 0]
    valid = AlignedEmbedder(windows=True).embed(image).valid[0]
    assert 1 <= valid.sum() < valid.size  # the blank windows do not count, the textured corner does
    assert AlignedEmbedder(windows=True).embed(np.zeros((1, 1, 32, 32), np.float32)).valid.sum() == 1


def _near_copies(train: DataSource, canvases: np.ndarray, per_family: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    chosen = {family: rng.choice(len(train), per_family, replace=False) for family in FAMILIES}
    return {
        family: np.stack([near_copy(family, load_image(train[i])[0], rng, canvases[rng.integers(len(canvases)), 0])[None] for i in indices])
        for family, indices in chosen.items()
    }


def test_phantom_guard_refuses_random_near_copies_and_releases_unseen_images(tmp_path):
    source = load_source("phantom:2d?patients=60&acquisitions=1&size=32&seed=4")
    build_guard(source, tmp_path / "guard", progress=False, plausibility=False, n_bootstrap=50)
    checker = load_checker(tmp_path / "guard")
    assert checker.names[:2] == ["pixel", "pixel-tiles"] and {"copy", "copy-regions"} <= set(checker.names)
    entries = {e["name"]: e for e in read_guard(tmp_path / "guard")["checks"]}
    assert entries["copy"]["embedder"] == entries["copy-regions"]["embedder"] == "aligned"
    unseen = np.stack([load_image(r) for r in source.split("test")])
    copies = _near_copies(source.split("train"), unseen, 3, np.random.default_rng(5))
    refused = {family: float(np.mean(~checker.decide(images).released)) for family, images in copies.items()}
    released = float(np.mean(checker.decide(unseen).released))
    print(f"\n[phantom] refused per family: {refused}; unseen released {released:.0%} of {len(unseen)}")
    assert np.mean(list(refused.values())) >= 0.9 and min(refused.values()) > 0.5, refused  # no family slips through
    assert released >= 0.5
