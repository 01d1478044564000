"""The pixel embedder: RMS distances, flip and shift tolerance, tiles that catch partial copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_pso.data import load_image, load_source
from monai_pso.embed import EmbedderSettingsError, PixelEmbedder, image_distances
from monai_pso.errors import ImageValueError


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """36 images (12 patients x 3 acquisitions) at 64x64, and their patient ids."""
    source = load_source("phantom:2d?patients=12&acquisitions=3&size=64")
    return np.stack([load_image(r) for r in source]), np.array([r.patient_id for r in source])


def nearest_other_patient(embedder: PixelEmbedder, images: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Per image, the distance to the closest image of another patient."""
    distances = image_distances(embedder.embed_queries(images), embedder.embed(images))
    distances[patients[:, None] == patients[None, :]] = np.inf
    return distances.min(axis=1)


def distance_to_original(embedder: PixelEmbedder, altered: np.ndarray, images: np.ndarray) -> np.ndarray:
    return image_distances(embedder.embed_queries(altered), embedder.embed(images)).diagonal()


def test_distance_is_rms_difference_whatever_the_grid():
    a, b = np.zeros((1, 1, 64, 64), np.float32), np.full((1, 1, 64, 64), 0.3, np.float32)
    for grid in (8, 32):
        embedder = PixelEmbedder(grid=grid, flip_axes=[])
        assert image_distances(embedder.embed(a), embedder.embed(b))[0, 0] == pytest.approx(0.3, abs=1e-6)


@pytest.mark.parametrize("tiles", [0, 3])
def test_flips_and_small_shifts_are_much_closer_than_other_patients(phantom, tiles):
    images, patients = phantom
    embedder = PixelEmbedder(tiles=tiles)
    others = nearest_other_patient(embedder, images, patients)
    flipped = distance_to_original(embedder, images[..., ::-1].copy(), images)
    shift1 = distance_to_original(embedder, np.roll(images, (1, -1), axis=(-2, -1)), images)
    shift2 = distance_to_original(embedder, np.roll(images, (2, 2), axis=(-2, -1)), images)
    assert flipped.max() < 1e-6
    assert np.median(shift1 / others) < 0.5 and (shift1 < others).mean() > 0.9
    assert np.median(shift2 / others) < 0.9
    assert np.median(shift1) < 0.3 * np.median(image_distances(embedder.embed(images), embedder.embed(images)))


def test_without_flip_views_a_mirror_image_is_far(phantom):
    images, _ = phantom
    mirrored = images[:6, :, :, ::-1].copy()
    assert distance_to_original(PixelEmbedder(flip_axes=[]), mirrored, images[:6]).min() > 0.02


def test_tiles_catch_an_organ_pasted_at_its_place(phantom):
    images, patients = phantom
    tiled, whole = PixelEmbedder(tiles=3), PixelEmbedder()
    source, host = images[0], images[3]  # two patients
    assert patients[0] != patients[3]
    pasted = host.copy()
    pasted[:, 16:48, 16:48] = source[:, 16:48, 16:48]
    train = images[[0, 6, 9, 12]]  # the source image among other patients' images
    tile_distances = image_distances(tiled.embed_queries(pasted[None]), tiled.embed(train))[0]
    assert tile_distances[0] < 1e-5
    assert tile_distances[1:].min() > 0.01
    assert image_distances(whole.embed_queries(pasted[None]), whole.embed(train))[0, 0] > 0.01  # global mode misses it
    assert nearest_other_patient(tiled, images, patients).min() > 0.01


def test_blank_tiles_do_not_count_but_every_image_keeps_a_vector():
    image = np.zeros((2, 1, 64, 64), np.float32)
    image[0, 0, 8:28, 8:28] = np.random.default_rng(0).random((20, 20))
    embedding = PixelEmbedder(tiles=3).embed(image)
    assert embedding.valid[0, 0] and embedding.valid[1, 0]  # the whole-image vector
    assert 1 <= embedding.valid[0, 1:].sum() < 9 and embedding.valid[1, 1:].sum() == 0
    blank_a, blank_b = np.zeros((1, 1, 64, 64), np.float32), np.zeros((1, 1, 64, 64), np.float32)
    blank_b[0, 0, 40:, 40:] = 0.5
    tiled = PixelEmbedder(tiles=3)
    assert image_distances(tiled.embed_queries(blank_b), tiled.embed(blank_a))[0, 0] > 0.1


def test_tiles_at_different_places_never_match():
    embedder = PixelEmbedder(tiles=3, flip_axes=[])
    image = np.zeros((1, 1, 64, 64), np.float32)
    image[0, 0, :32, :32] = np.random.default_rng(1).random((32, 32))
    moved = np.roll(image, (32, 32), axis=(-2, -1))  # the same content at the opposite corner
    assert image_distances(embedder.embed(moved), embedder.embed(image))[0, 0] > 0.1


def test_3d_volumes_embed_with_default_grid_and_two_flip_views():
    volumes = np.random.default_rng(2).random((2, 1, 20, 24, 18)).astype(np.float32)
    embedder = PixelEmbedder()
    assert embedder.embed(volumes).vectors.shape == (2, 1, 16**3)
    queries = embedder.embed_queries(volumes)
    assert queries.vectors.shape == (2, 3, 16**3)
    assert image_distances(embedder.embed_queries(volumes[:, :, ::-1].copy()), embedder.embed(volumes)).diagonal().max() < 1e-6


def test_fingerprint_follows_every_setting():
    base = PixelEmbedder()
    changed = [
        PixelEmbedder(grid=16),
        PixelEmbedder(smoothing=0.0),
        PixelEmbedder(tiles=3),
        PixelEmbedder(tile_size=8),
        PixelEmbedder(flip_axes=[0]),
        PixelEmbedder(min_tile_std=0.05),
        PixelEmbedder(min_tile_foreground=0.3),
        PixelEmbedder(background=0.1),
    ]
    fingerprints = {base.fingerprint} | {e.fingerprint for e in changed}
    assert len(fingerprints) == len(changed) + 1
    assert PixelEmbedder().fingerprint == base.fingerprint


@pytest.mark.parametrize(
    "images",
    [np.zeros((2, 64, 64)), np.zeros((2, 3, 8, 8)), np.full((1, 1, 8, 8), np.nan), torch.zeros((0, 1, 8, 8))],
    ids=["no-channel", "three-channels", "nan", "empty"],
)
def test_bad_images_are_refused(images):
    with pytest.raises(ImageValueError, match="images"):
        PixelEmbedder().embed(images)


@pytest.mark.parametrize(
    "settings", [dict(grid=16, tile_size=32), dict(grid=(16, 16, 16)), dict(flip_axes=[2]), dict(tiles=-1), dict(smoothing=-1.0)]
)
def test_impossible_settings_are_refused(settings):
    with pytest.raises(EmbedderSettingsError):
        PixelEmbedder(**settings).embed_queries(np.zeros((1, 1, 32, 32)))
