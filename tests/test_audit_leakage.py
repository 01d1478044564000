"""The audit finds a release that copies training images and finds nothing in a release of unseen patients.

Phantom (always) and real MedMNIST images (when ../shared/data is present). Cohorts are disjoint groups
of patients; "held-out release" = real images of patients that neither training nor the holdout nor
the control group contain, so that every test's null hypothesis holds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from monai_pso.audit import AuditCohorts, AuditSettings, run_audit
from monai_pso.audit.embedders import default_audit_embedder
from monai_pso.data import ImageRecord, load_source

SETTINGS = AuditSettings(n_resamples=400)
pytestmark = pytest.mark.usefixtures("one_thread")


def copies_of(records: list[ImageRecord], noise: float, seed: int = 0) -> list[ImageRecord]:
    """A "generator" that memorised its training images: each one, lightly re-noised, as a synthetic image."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        image = np.asarray(r.image, np.float32) / (255.0 if r.normalize == "uint8" else 1.0)
        noisy = np.clip(image + rng.normal(0.0, noise, image.shape), 0.0, 1.0).astype(np.float32)
        out.append(replace(r, item_id=f"synthetic-{r.item_id}", patient_id="synthetic", image=noisy, normalize="none", split=None))
    return out


def released(records: list[ImageRecord]) -> list[ImageRecord]:
    return [replace(r, item_id=f"released-{r.item_id}", split=None) for r in records]


def split_patients(records: list[ImageRecord], parts: int) -> list[list[ImageRecord]]:
    patients = sorted({r.patient_id for r in records})
    return [[r for r in records if r.patient_id in set(patients[k::parts])] for k in range(parts)]


@pytest.fixture(scope="module")
def phantom_cohorts():
    source = load_source("phantom:2d?patients=80&acquisitions=2&size=32&ratios=0.4,0.2,0.4")
    control, unseen = split_patients(source.split("test").records, 2)
    return source.split("train").records, source.split("val").records, control, unseen


@pytest.fixture(scope="module")
def phantom_results(phantom_cohorts):
    training, holdout, control, unseen = phantom_cohorts
    embedder = default_audit_embedder(2)
    copy = run_audit(AuditCohorts(copies_of(training, 0.01), training, holdout, control), [embedder], SETTINGS)
    held = run_audit(AuditCohorts(released(unseen), training, holdout, control), [embedder], SETTINGS)
    return copy, held


def assert_leak_found(result):
    report = result.to_dict()
    assert report["dcr_p_value"] < 0.05 and report["dcr_auc_ci"][0] > 0.5 and report["dcr_close_share_ci"][0] > report["dcr"]["null_share"]
    assert report["singling_out_risk_ci"][0] > 0.0
    assert report["membership_auc_ci"][0] > 0.5
    closest = [row for row in report["copy_rate"] if row["level"].startswith("0.1 x")][0]
    assert closest["released_share"] >= 0.5 > closest["holdout_ci"][1]
    assert report["conclusion"].startswith("significant leakage detected")


def assert_nothing_found(result):
    report = result.to_dict()
    assert report["dcr_p_value"] > 0.05
    assert report["singling_out_risk_ci"][0] <= 0.0 < report["singling_out_risk_ci"][1]
    assert report["membership_auc_ci"][0] <= 0.5 <= report["membership_auc_ci"][1]
    closest = [row for row in report["copy_rate"] if row["level"].startswith("0.1 x")][0]
    assert closest["released_ci"][0] <= closest["holdout_ci"][1]
    assert report["conclusion"].startswith("no measurable excess singling-out risk (upper 95% bound")


def test_phantom_copy_release_leaks(phantom_results):
    copy, _ = phantom_results
    assert_leak_found(copy)
    assert copy.counts["dcr_holdout_images"] == copy.counts["holdout_patients"]  # one image per holdout patient
    assert copy.counts["dcr_training_images"] == copy.counts["training_images"]  # the full training set
    assert copy.counts["singling_out_patients_per_side"] == copy.counts["control_patients"]
    assert copy.nearest_pairs[0].distance <= copy.nearest_pairs[-1].distance
    assert copy.nearest_pairs[0].released.item_id == f"synthetic-{copy.nearest_pairs[0].training.item_id}"


def test_phantom_held_out_release_shows_nothing(phantom_results):
    _, held = phantom_results
    assert_nothing_found(held)


def test_overlapping_cohorts_are_refused(phantom_cohorts):
    from monai_pso.errors import DataSourceError

    training, holdout, control, unseen = phantom_cohorts
    with pytest.raises(DataSourceError, match="control: .*also in training"):
        run_audit(AuditCohorts(released(unseen), training, holdout, training[:4]), [default_audit_embedder(2)], SETTINGS)


@pytest.mark.shared_data
def test_medmnist_copy_and_held_out_releases(shared_data):
    source = load_source(str(shared_data / "medmnist" / "pneumoniamnist_balanced_subset.npz"))
    pool = source.split("train").records  # one split, shuffled: hidden same-patient images spread evenly
    order = np.random.default_rng(0).permutation(len(pool))[:500]
    picked = [pool[i] for i in order]
    training, holdout, control, unseen = picked[:200], picked[200:300], picked[300:400], picked[400:]
    embedder = default_audit_embedder(2)
    assert_leak_found(run_audit(AuditCohorts(copies_of(training[:100], 0.01), training, holdout, control), [embedder], SETTINGS))
    assert_nothing_found(run_audit(AuditCohorts(released(unseen), training, holdout, control), [embedder], SETTINGS))
