"""Fidelity in the audit: the ``fidelity`` embedder tells unrealistic images from real ones, precision/recall/
density/coverage/authenticity and FID/KID beside a real baseline, and an audit that says when it cannot tell.

Unrealistic "releases" come from :func:`monai_pso.data.unrealistic.unrealistic_images`, each image with its own
random parameters: smooth random blobs (the failure issue 14 measured), Gaussian noise, heavily blurred real images.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from monai_pso.audit import AuditCohorts, AuditSettings, run_audit
from monai_pso.audit.embedders import default_audit_embedder
from monai_pso.audit.fidelity import SCORES, manifold_scores
from monai_pso.audit.report import write_report
from monai_pso.data import ImageRecord, load_image, load_source
from monai_pso.data.unrealistic import KINDS, unrealistic_images
from monai_pso.embed import create_embedder, embedder_from_settings, load_embedder

SETTINGS = AuditSettings(n_resamples=200)
pytestmark = pytest.mark.usefixtures("one_thread")


def nearest_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    return np.sqrt(((queries[:, None, :] - references[None, :, :]) ** 2).sum(axis=2)).min(axis=1)


def assert_fakes_farther(training: np.ndarray, held_out: np.ndarray, spatial_dims: int, ratio: float, share: float) -> None:
    """Unrealistic images lie farther from the training images than held-out real images do (fidelity embedding)."""
    embedder = create_embedder("fidelity", spatial_dims=spatial_dims)
    reference = embedder.embed(training).rows()
    real = nearest_distances(embedder.embed(held_out).rows(), reference)
    rng = np.random.default_rng(7)
    for kind in KINDS:
        fake = nearest_distances(embedder.embed(unrealistic_images(held_out, kind, rng)).rows(), reference)
        assert np.median(fake) > ratio * np.median(real), kind
        assert np.mean(fake > np.quantile(real, 0.95)) >= share, kind


def images(records: list[ImageRecord]) -> np.ndarray:
    return np.stack([load_image(r) for r in records]).astype(np.float32)


@pytest.mark.parametrize("source", ["phantom:2d?patients=24&acquisitions=2&size=48", "phantom:3d?patients=12&acquisitions=2&size=24"])
def test_fidelity_embedder_puts_unrealistic_images_far_from_real_ones(source):
    records = load_source(source).records
    patients = sorted({r.patient_id for r in records})
    held = set(patients[::3])
    training = images([r for r in records if r.patient_id not in held])
    held_out = images([r for r in records if r.patient_id in held])
    assert_fakes_farther(training, held_out, training.ndim - 2, ratio=2.5, share=0.95)


@pytest.mark.shared_data
def test_fidelity_embedder_on_medmnist(shared_data):
    source = load_source(str(shared_data / "medmnist" / "pneumoniamnist_balanced_subset.npz"))
    training, held_out = images(source.split("train").records[:300]), images(source.split("val").records[:60])
    assert_fakes_farther(training, held_out, 2, ratio=1.5, share=0.9)


def test_fidelity_embedder_is_rebuilt_from_settings_and_saved(tmp_path):
    embedder = create_embedder("fidelity", spatial_dims=2, channels=[8, 8], input_size=32)
    batch = np.random.default_rng(0).random((3, 1, 40, 40)).astype(np.float32)
    rebuilt = embedder_from_settings(embedder.settings, expected_fingerprint=embedder.fingerprint)
    np.testing.assert_array_equal(rebuilt.embed(batch).vectors, embedder.embed(batch).vectors)
    embedder.save(tmp_path / "fidelity")
    assert load_embedder(tmp_path / "fidelity").fingerprint == embedder.fingerprint
    assert create_embedder("fidelity", spatial_dims=2, channels=[8, 8], input_size=32, seed=1).fingerprint != embedder.fingerprint


def test_scores_match_prdc_and_real_vs_real_is_near_expected():
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(3)
    dim, n = int(rng.integers(4, 16)), 200
    scale = rng.uniform(0.5, 3.0)
    real, fake, train = (rng.normal(size=(n, dim)) * scale for _ in range(3))
    scores = manifold_scores(fake, real, train, nearest_k=5, n_resamples=300)
    reference = prdc.compute_prdc(real, fake, 5)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(scores, name).value == pytest.approx(float(reference[name]), abs=1e-12)
    expected_coverage = 1.0 - np.prod([(n - i) / (2 * n - i) for i in range(1, 6)])  # Naeem et al. 2020, identical distributions
    assert abs(scores.coverage.value - expected_coverage) < 0.05
    assert scores.precision.value > 0.8 and scores.recall.value > 0.8
    assert scores.density.ci[0] < 1.0 < scores.density.ci[1]
    assert 0.3 < scores.authenticity.value < 1.0 and scores.kid.ci[0] < 0.0 < scores.kid.ci[1]
    shifted = manifold_scores(fake + 3.0, real, train, nearest_k=5, n_resamples=50)
    assert shifted.precision.value < 0.2 and shifted.fid > 10 * scores.fid and shifted.kid.ci[0] > scores.kid.ci[1]


def as_release(pictures: np.ndarray, template: ImageRecord, tag: str) -> list[ImageRecord]:
    return [replace(template, item_id=f"{tag}-{i}", patient_id="synthetic", image=p, normalize="none", split=None) for i, p in enumerate(pictures)]


@pytest.fixture(scope="module")
def phantom_audits():
    source = load_source("phantom:2d?patients=60&acquisitions=2&size=32&ratios=0.4,0.2,0.4")
    training, holdout, test = source.split("train").records, source.split("val").records, source.split("test").records
    patients = sorted({r.patient_id for r in test})
    control = [r for r in test if r.patient_id in set(patients[::2])]
    unseen = [replace(r, item_id=f"released-{r.item_id}", split=None) for r in test if r.patient_id not in set(patients[::2])]
    rng = np.random.default_rng(11)
    garbage = np.concatenate([unrealistic_images(images(unseen[:12]), "blobs", rng), unrealistic_images(images(unseen[12:]), "noise", rng)])
    copies = np.clip(images(training[:24]) + rng.normal(0.0, 0.005, (24, 1, 32, 32)), 0, 1).astype(np.float32)
    releases = {"unseen": unseen, "garbage": as_release(garbage, training[0], "g"), "copies": as_release(copies, training[0], "c"), "five": unseen[:5]}
    embedder = default_audit_embedder(2)
    return {name: run_audit(AuditCohorts(release, training, holdout, control), [embedder], SETTINGS) for name, release in releases.items()}


def test_real_release_scores_like_the_real_baseline(phantom_audits):
    report = phantom_audits["unseen"].to_dict()
    baseline = report["fidelity_baseline"]
    assert report["precision"] >= 0.8 and baseline["precision"] >= 0.8 and abs(report["precision"] - baseline["precision"]) < 0.15
    assert min(report["recall"], report["coverage"], baseline["recall"], baseline["coverage"]) >= 0.75
    assert 0.6 < report["density"] < 1.4 and report["authenticity"] >= 0.7
    assert not report["measurability"]["too_small"] and report["conclusion"].startswith("no measurable excess singling-out risk")


def test_blobs_and_noise_get_low_precision_and_density(phantom_audits):
    report = phantom_audits["garbage"].to_dict()
    assert report["precision_ci"][1] < 0.1 and report["density"] < 0.1 and report["coverage"] < 0.1
    assert report["fid"] > 5 * report["fidelity_baseline"]["fid"] and report["kid_ci"][0] > report["fidelity_baseline"]["kid_ci"][1]
    assert "do not look like real images" in report["conclusion"]
    assert "do not look like real images" not in phantom_audits["unseen"].conclusion


def test_copies_of_training_images_get_low_authenticity(phantom_audits):
    report = phantom_audits["copies"].to_dict()
    assert report["authenticity_ci"][1] < 0.2 < 0.6 < report["fidelity_baseline"]["authenticity"]
    assert report["precision"] >= 0.8  # copies look real: fidelity alone would not flag them


def test_five_images_are_too_small_to_measure(phantom_audits):
    result = phantom_audits["five"]
    scale = result.to_dict()["measurability"]
    assert scale["too_small"] and max(scale["interval_widths"].values()) > 0.5 and scale["images_needed"] > 5
    assert result.conclusion.startswith("too small to measure: 5 released images")
    assert f"about {scale['images_needed']} released images would be needed" in result.conclusion


def test_report_has_fidelity_keys_with_intervals(phantom_audits, tmp_path):
    out = write_report(phantom_audits["unseen"], tmp_path / "report", {"release": ["in memory"]})
    report = json.loads((out / "report.json").read_text())
    for row in (report, report["fidelity_baseline"]):
        for name in (*SCORES, "kid"):
            low, high = row[f"{name}_ci"]
            assert isinstance(row[name], float) and low <= high
        assert all(0.0 <= row[name] <= 1.0 for name in ("precision", "recall", "coverage", "authenticity")) and row["fid"] >= 0.0
    assert report["fidelity_feature_space"]["name"] == "fidelity" and len(report["fidelity_feature_space"]["fingerprint"]) == 64
    assert report["fidelity_baseline"]["synthetic_images"] == report["counts"]["holdout_images"]
    assert "## Fidelity and diversity" in (out / "report.md").read_text() and "real baseline" in (out / "report.md").read_text()
    assert (out / "report.html").read_text().count('<img alt="') == 6
