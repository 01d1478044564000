"""The copy check's pose refinement: near-copies under random affine maps off the pose grid come close,
no distance ever rises, and calibration and the guard's decision measure the same refined distance.

Copies are made with scipy.ndimage (``affine_transform``), each with its own random anisotropic scale,
shear, turn and shift, drawn from ranges wider than the grid's turns and zooms; none of the embedder's
poses is reused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_pso.calibrate import calibrate_threshold
from monai_pso.calibrate.distances import holdout_distances, same_patient_distances
from monai_pso.data import DataSource, ImageRecord
from monai_pso.embed.aligned import AlignedEmbedder
from monai_pso.embed.registry import embedder_from_settings
from monai_pso.guard.checker import GuardCheck
from monai_pso.index import ReferenceIndex, build_index
from monai_pso.index.query import nearest_training_items

pytestmark = pytest.mark.usefixtures("one_thread")

GRID_ONLY = AlignedEmbedder(refine_steps=0)


def _fields(count: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``(count, 1, *shape)`` smooth random images in ``[0, 1]``: coarse noise upsampled (cubic)."""
    coarse = rng.random((count, *[6] * len(shape)))
    images = np.stack([ndimage.zoom(c, [s / 6 for s in shape], order=3) for c in coarse])
    axes = tuple(range(1, images.ndim))
    images = (images - images.min(axis=axes, keepdims=True)) / np.ptp(images, axis=axes, keepdims=True)
    return images[:, None].astype(np.float32)


def _affine_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` under a random affine map: scale 0.87..1.13 per axis, shears up to 0.13, a turn up to 13
    degrees (about a random axis in 3D) and a shift up to 10% of the side per axis, borders replicated."""
    dims = image.ndim
    linear = np.diag(rng.uniform(0.87, 1.13, dims))
    linear[np.triu_indices(dims, 1)] = rng.uniform(-0.13, 0.13, dims * (dims - 1) // 2)
    angle = np.radians(rng.uniform(-13.0, 13.0))
    plane = rng.choice(dims, 2, replace=False)
    turn = np.eye(dims)
    turn[np.ix_(plane, plane)] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix = turn @ linear
    centre = (np.array(image.shape) - 1) / 2
    offset = centre - matrix @ centre + rng.uniform(-0.1, 0.1, dims) * np.array(image.shape)
    return np.clip(ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="nearest"), 0.0, 1.0)


def _index(images: np.ndarray) -> ReferenceIndex:
    ids = [f"t{i}" for i in range(len(images))]
    return ReferenceIndex.from_vectors(GRID_ONLY.embed(images).vectors[:, 0], np.arange(len(images)), ids, ids, image_shape=images.shape[2:])


@pytest.mark.parametrize("shape, n_train, n_copies", [((28, 28), 16, 10), ((20, 20, 20), 8, 4)])
def test_random_affine_copies_come_close_after_refinement_and_no_distance_rises(shape, n_train, n_copies):
    rng = np.random.default_rng(len(shape))
    training, unseen = _fields(n_train, shape, rng), _fields(n_train, shape, rng)
    sources = rng.choice(n_train, n_copies, replace=False)
    copies = np.stack([_affine_copy(training[i, 0], rng)[None] for i in sources]).astype(np.float32)
    index, refining = _index(training), AlignedEmbedder()
    grid = {name: nearest_training_items(index, GRID_ONLY, images) for name, images in (("copies", copies), ("unseen", unseen))}
    refined = {name: nearest_training_items(index, refining, images) for name, images in (("copies", copies), ("unseen", unseen))}
    for name in grid:
        assert (refined[name].distance <= grid[name].distance).all(), name  # the grid's answer is an upper bound
    assert (refined["copies"].item == sources).all()
    # refused with room to spare at any tau below every unseen image's distance, where the grid alone comes short
    nearest_unseen = refined["unseen"].distance.min()
    assert refined["copies"].distance.max() < 0.5 * nearest_unseen, (refined["copies"].distance, nearest_unseen)
    assert np.median(refined["copies"].distance / grid["copies"].distance) < 0.6, (refined["copies"].distance, grid["copies"].distance)


def test_refine_never_exceeds_the_start_pose_distance():
    rng = np.random.default_rng(7)
    images, references = _fields(6, (24, 24), rng), _fields(6, (24, 24), rng)
    embedder = AlignedEmbedder(refine_steps=int(rng.integers(3, 12)))
    queries = embedder.embed_queries(images)
    targets = np.broadcast_to(embedder.embed(references).vectors[None, :, 0], (6, 6, queries.vectors.shape[2]))
    start = np.linalg.norm(queries.vectors[:, :, None, :].astype(np.float64) - targets[:, None], axis=3).min(axis=1)
    refined = embedder.refine(images, queries, targets)
    assert refined.shape == (6, 6) and (refined <= start + 1e-6).all() and (refined < start).mean() > 0.5


def test_refined_distance_is_the_same_under_the_callers_autocast_inference_mode_and_batch():
    rng = np.random.default_rng(9)
    training = _fields(5, (24, 24), rng)
    copies = np.stack([_affine_copy(image[0], rng)[None] for image in training]).astype(np.float32)
    index, embedder = _index(training), AlignedEmbedder(refine_steps=int(rng.integers(4, 10)))
    plain = nearest_training_items(index, embedder, copies).distance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = nearest_training_items(index, embedder, copies).distance
    with torch.inference_mode():
        inference = nearest_training_items(index, embedder, torch.from_numpy(copies)).distance
    np.testing.assert_array_equal(autocast, plain)
    np.testing.assert_array_equal(inference, plain)
    alone = np.concatenate([nearest_training_items(index, embedder, copies[i : i + 1]).distance for i in range(len(copies))])
    np.testing.assert_allclose(alone, plain, rtol=1e-4)  # whatever batch an image comes in
    assert (plain < nearest_training_items(index, GRID_ONLY, copies).distance).all()


def _source(rng: np.random.Generator) -> DataSource:
    """Two images per patient (the second turned by a few degrees), 8 training and 5 held-out patients."""
    records = []
    for patient, image in enumerate(_fields(13, (28, 28), rng)):
        split = "train" if patient < 8 else "val"
        again = ndimage.rotate(image[0], rng.uniform(-4, 4), reshape=False, order=1, mode="nearest")[None]
        for k, shot in enumerate((image, np.clip(again, 0, 1).astype(np.float32))):
            records.append(ImageRecord(f"p{patient}-{k}", f"p{patient}", shot, split=split, modality="mri", normalize="none"))
    return DataSource(records, "random fields, two per patient")


def test_calibration_and_decision_measure_the_same_refined_distance():
    source = _source(np.random.default_rng(11))
    embedder = AlignedEmbedder()
    index = build_index(source, embedder, progress=False)
    threshold = calibrate_threshold(index, embedder, source, rule="holdout", n_bootstrap=20, progress=False, max_utility_cost=1.0)
    held_out = source.split("val")
    calibrated = holdout_distances(index, embedder, held_out, progress=False).values
    decided, _ = GuardCheck.create(index, threshold, embedder).measure(np.stack([r.image for r in held_out]))
    np.testing.assert_array_equal(decided, calibrated)  # one function measures both
    assert threshold.value == pytest.approx(np.percentile(calibrated, 5.0), rel=0.2)
    unrefined = holdout_distances(index, GRID_ONLY, held_out, progress=False).values
    assert (calibrated <= unrefined).all() and (calibrated < unrefined).any()
    same, same_grid = (same_patient_distances(e, source, progress=False).values for e in (embedder, GRID_ONLY))
    assert (same <= same_grid + 1e-12).all() and (same < same_grid).any()


def test_settings_rebuild_with_their_fingerprint_and_old_settings_do_not_refine():
    rng = np.random.default_rng(5)
    embedder = AlignedEmbedder(refine_candidates=int(rng.integers(1, 9)), refine_steps=int(rng.integers(1, 60)))
    assert embedder_from_settings(embedder.settings, expected_fingerprint=embedder.fingerprint).settings == embedder.settings
    before = {key: value for key, value in embedder.settings.items() if not key.startswith("refine")}  # an index made before refinement
    rebuilt = embedder_from_settings(before, expected_fingerprint=GRID_ONLY.fingerprint)
    assert not rebuilt.refines and embedder.refines and embedder.fingerprint != GRID_ONLY.fingerprint
