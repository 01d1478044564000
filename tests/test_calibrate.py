"""Calibration of tau: definitions, rules, near-duplicates, bootstrap, persistence and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from guard_support import CALIBRATION_SOURCE, pixel_indexed
from monai_pso.calibrate import Threshold, calibrate_threshold, holdout_distances, same_patient_distances
from monai_pso.calibrate.bootstrap import PatientResampler, bootstrap_percentile, percentile_interval
from monai_pso.data import DataSource, ImageRecord, load_source
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.embed.views import QueryViews, rotate, translate
from monai_pso.errors import DataSourceError, FingerprintMismatchError, ImageValueError
from monai_pso.index import build_index

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = CALIBRATION_SOURCE


@pytest.fixture(scope="module")
def calibrated(one_thread):
    source, embedder, index = pixel_indexed(SOURCE)
    threshold = calibrate_threshold(index, embedder, source, split="val", n_bootstrap=200, progress=False)
    return source, embedder, index, threshold


def test_parts_follow_their_definitions(calibrated):
    source, embedder, index, threshold = calibrated
    views = threshold.views
    held = holdout_distances(index, embedder, source.split("val"), views, progress=False)
    assert threshold.holdout.value == pytest.approx(np.percentile(held.values, 5))
    assert threshold.holdout.n_images == len(source.split("val")) and threshold.holdout.n_patients == len(source.split("val").patients())
    same = np.concatenate([same_patient_distances(embedder, source.split(s), views, progress=False).values for s in ("val", "train")])
    assert threshold.same is not None and threshold.same.value == pytest.approx(np.percentile(same, 95))
    assert threshold.same.n_images == len(same)  # holdout and training patients with >= 2 images
    assert threshold.same_applied and threshold.applied_rule == "max"  # the phantom's AUC criterion holds (tests/test_calibration_meaning.py)
    assert threshold.value == max(threshold.holdout.value, threshold.same.value)
    assert threshold.utility_cost == pytest.approx(np.mean(held.values < threshold.value))
    for part in (threshold.holdout, threshold.same):
        assert part.interval[0] <= part.value <= part.interval[1]
    print(f"\nphantom tau={threshold.value:.4f} holdout={threshold.holdout.value:.4f} same={threshold.same.value:.4f} utility cost={threshold.utility_cost:.1%}")


def test_same_patient_distance_is_the_nearest_other_image_of_the_patient(calibrated):
    source, embedder, _, _ = calibrated
    patient = source.split("train").patients()[0]
    images = np.stack([r.image for r in source.by_patient()[patient]])
    got = same_patient_distances(embedder, DataSource(source.by_patient()[patient], "one patient"), QueryViews(), progress=False).values
    query, reference = embedder.embed_queries(images), embedder.embed(images)
    expected = []
    for i in range(len(images)):
        q = query.vectors[i][query.valid[i]].astype(np.float64)
        others = [reference.vectors[j][reference.valid[j]].astype(np.float64) for j in range(len(images)) if j != i]
        expected.append(min(np.sqrt(((q[:, None] - r[None]) ** 2).sum(-1)).min() for r in others))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_rules_and_save_load_round_trip(calibrated, tmp_path):
    source, embedder, index, threshold = calibrated
    path = threshold.save(tmp_path / "tau.json")
    assert Threshold.load(path, embedder, index) == threshold
    content = json.loads(path.read_text())
    assert content["query_views"] == threshold.query_views and content["embedder_fingerprint"] == embedder.fingerprint
    holdout_only = calibrate_threshold(index, embedder, source, rule="holdout", n_bootstrap=50, progress=False)
    assert holdout_only.value == pytest.approx(threshold.holdout.value) and holdout_only.applied_rule == "holdout"
    same_only = calibrate_threshold(index, embedder, source, rule="same", n_bootstrap=50, progress=False)
    assert same_only.value == pytest.approx(threshold.same.value)


def test_threshold_refuses_another_embedder_or_index(calibrated, tmp_path):
    source, embedder, index, threshold = calibrated
    path = threshold.save(tmp_path / "tau.json")
    with pytest.raises(FingerprintMismatchError):
        Threshold.load(path, embedder=PixelEmbedder(smoothing=2.0))
    other = build_index(load_source("phantom:2d?patients=6&acquisitions=2&size=32&seed=9"), embedder, progress=False)
    with pytest.raises(FingerprintMismatchError):
        Threshold.load(path, index=other)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(DataSourceError):
        Threshold.load(tmp_path / "bad.json")


def _one_image_per_patient(rng: np.random.Generator, n: int, split: str, base: np.ndarray | None = None) -> list[ImageRecord]:
    images = rng.random((n, 1, 16, 16)).astype(np.float32) if base is None else base
    return [ImageRecord(f"{split}-{i}", f"{split}-{i}", images[i], split=split, normalize="none") for i in range(len(images))]


def test_medmnist_like_data_falls_back_to_holdout_and_near_duplicates_are_reported():
    rng = np.random.default_rng(0)
    train = _one_image_per_patient(rng, 40, "train")
    val_images = rng.random((30, 1, 16, 16)).astype(np.float32)
    val_images[:6] = np.stack([train[i].image for i in range(6)]) * 0.998 + 0.001  # near-duplicates across splits
    source = DataSource(train + _one_image_per_patient(rng, 0, "val", val_images), "one image per patient")
    embedder = PixelEmbedder(grid=16, smoothing=0.0)
    index = build_index(source, embedder, progress=False)
    threshold = calibrate_threshold(index, embedder, source, views=QueryViews(), n_bootstrap=100, progress=False)
    kept_all = calibrate_threshold(index, embedder, source, views=QueryViews(), near_duplicate_factor=None, n_bootstrap=100, progress=False)
    with pytest.raises(DataSourceError, match="rule='same'"):
        calibrate_threshold(index, embedder, source, views=QueryViews(), rule="same", n_bootstrap=10, progress=False)
    assert threshold.same is None and threshold.applied_rule == "holdout" and any("falls back" in n for n in threshold.notes)
    assert threshold.near_duplicate_share == pytest.approx(6 / 30)
    assert threshold.holdout.n_images == 24 and kept_all.holdout.n_images == 30
    assert kept_all.value < 0.01 < threshold.value  # the low percentile collapses onto the near-duplicates unless they are left out
    assert threshold.holdout_value_all == pytest.approx(kept_all.value)
    assert threshold.utility_cost >= 6 / 30


def test_holdout_patients_in_the_index_are_refused(calibrated):
    source, embedder, index, _ = calibrated
    with pytest.raises(DataSourceError, match="unseen"):
        calibrate_threshold(index, embedder, source, split="train", n_bootstrap=10, progress=False)


def test_bootstrap_resamples_patients():
    patients = np.array(["a"] * 5 + ["b"] * 5)
    values = np.array([0.0] * 5 + [1.0] * 5)
    replicates = bootstrap_percentile(values, PatientResampler(patients), 50, 400, np.random.default_rng(0))
    assert set(np.unique(replicates)) <= {0.0, 0.5, 1.0}  # whole patients are drawn, never single images
    low, high = percentile_interval(replicates, 0.95)
    assert low == 0.0 and high == 1.0


def test_query_views():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 6] = 1.0
    assert translate(image, (1, -2))[0, 0, 5, 4] == 1.0
    turned = rotate(image, 90.0)[0, 0]
    assert turned.argmax() in (2 * 9 + 4, 6 * 9 + 4)  # two pixels above or below the centre
    assert QueryViews(max_shift=2, rotations=(5.0,)).count(2) == 50
    assert len(list(QueryViews(max_shift=1).images(torch.zeros(2, 1, 4, 4, 4)))) == 27


def test_images_outside_the_unit_range_are_refused(calibrated):
    _, embedder, index, _ = calibrated
    from monai_pso.index.query import nearest_training_items

    with pytest.raises(ImageValueError, match=r"\[0, 1\]"):
        nearest_training_items(index, embedder, np.full((1, 1, 32, 32), 1.5, np.float32))
    with pytest.raises(ImageValueError):
        nearest_training_items(index, embedder, np.zeros((1, 1, 16, 16), np.float32))  # not the index's shape
