"""Calibration tells the user when tau is meaningless: the same- vs different-patient AUC and the utility-cost limit.

- (a) the phantom's re-scan-like acquisitions: same-patient images lie nearer each other than the nearest
  stranger, the AUC is high and tau_same is applied;
- (b) the same phantom with the held-out patient ids shuffled (a "patient" is three strangers): AUC at or
  below chance, tau_same not applied, tau from the holdout part alone and the threshold says why;
- (c) a tau refusing most held-out real images is an error unless accepted (API and CLI);
- real paediatric chest X-rays with several images per child (skipped when the shared data is absent).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from guard_support import CALIBRATION_SOURCE, pixel_indexed
from monai_pso.calibrate import Threshold, calibrate_threshold, holdout_distances, same_patient_distances
from monai_pso.calibrate.bootstrap import auc_smaller
from monai_pso.calibrate.calibration import UtilityCostError, verification_auc
from monai_pso.calibrate.distances import PatientDistances
from monai_pso.calibrate.threshold import VerificationAUC
from monai_pso.cli.main import main
from monai_pso.data import DataSource, ImageRecord
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.errors import DataSourceError, MonaiPsoError
from monai_pso.index import build_index

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = CALIBRATION_SOURCE


@pytest.fixture(scope="module")
def phantom(one_thread):
    return pixel_indexed(SOURCE)


def _relabelled(source: DataSource, seed: int = 0) -> DataSource:
    """The source with the held-out images' patient ids shuffled among them: same-patient images are strangers."""
    held = [r for r in source if r.split == "val"]
    ids = np.random.default_rng(seed).permutation([r.patient_id for r in held])
    shuffled = [replace(r, patient_id=f"shuffled-{pid}") for r, pid in zip(held, ids)]
    return DataSource([r for r in source if r.split != "val"] + shuffled, f"{source.description} (held-out patient ids shuffled)")


def test_auc_is_mann_whitney_with_ties():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = (a[:, None] < b[None]).mean() + 0.5 * (a[:, None] == b[None]).mean()
    assert auc_smaller(a, b) == pytest.approx(pairs)


def test_phantom_repeat_acquisitions_give_a_high_auc_and_tau_same_is_applied(phantom):
    source, embedder, index = phantom
    threshold = calibrate_threshold(index, embedder, source, n_bootstrap=200, progress=False)
    v = threshold.verification
    assert v is not None and v.n_patients == len(source.split("val").patients()) == 12 and v.n_images == 36
    held = source.split("val")
    same = same_patient_distances(embedder, held, threshold.views, progress=False)
    different = holdout_distances(index, embedder, held, threshold.views, progress=False)
    pairs = same.values[:, None] < different.values[None]  # every held-out patient has repeats here
    assert v.value == pytest.approx(pairs.mean() + 0.5 * (same.values[:, None] == different.values[None]).mean())
    assert v.value > 0.9 and v.interval[0] > 0.5 and v.interval[0] <= v.value <= v.interval[1] and v.meaningful
    assert threshold.same_applied and threshold.applied_rule == "max"
    assert threshold.value == max(threshold.holdout.value, threshold.same.value)
    assert threshold.utility_cost <= threshold.utility_limit == 0.5 and not threshold.utility_cost_accepted
    text = threshold.describe()
    assert "AUC" in text and "tau_same applied" in text and "limit 50%" in text
    print(f"\nphantom: {v.describe()}; tau={threshold.value:.4f} utility cost {threshold.utility_cost:.1%}")


def test_shuffled_patient_ids_give_chance_auc_and_tau_same_is_not_applied(phantom):
    source, embedder, index = phantom
    shuffled = _relabelled(source)
    threshold = calibrate_threshold(index, embedder, shuffled, training=source, n_bootstrap=200, progress=False)
    v = threshold.verification
    assert v is not None and v.n_patients == 12 and not v.meaningful
    # three strangers' nearest image is farther than the nearest of 45 training strangers: at or below chance
    assert v.value < 0.6 and v.interval[0] <= 0.5
    assert threshold.same is not None and not threshold.same_applied and threshold.applied_rule == "holdout"
    assert threshold.value == threshold.holdout.value
    assert any("tau_same" in note and "not applied" in note for note in threshold.notes)
    assert "tau_same NOT applied" in threshold.describe()
    with pytest.raises(DataSourceError, match="rule='same'.*not shown"):
        calibrate_threshold(index, embedder, shuffled, training=source, rule="same", n_bootstrap=20, progress=False)
    forced = calibrate_threshold(index, embedder, shuffled, training=source, min_same_auc=None, accept_utility_cost=True, n_bootstrap=20, progress=False)
    assert forced.same_applied and forced.value == max(forced.holdout.value, forced.same.value)
    print(f"\nshuffled ids: {v.describe()}; forced tau_same would cost {forced.utility_cost:.1%}")


def test_too_few_patients_with_repeats_do_not_apply_tau_same(phantom):
    source, embedder, index = phantom
    threshold = calibrate_threshold(index, embedder, source, min_same_patients=13, n_bootstrap=50, progress=False)
    assert threshold.verification.value > 0.9 and not threshold.same_applied and "too few" in threshold.verification.reason
    one_image_each = DataSource([r for r in source if r.split != "val"] + [r for r in source.split("val") if r.item_id.endswith("0")], "one per held-out patient")
    if len(one_image_each.split("val")):
        t = calibrate_threshold(index, embedder, one_image_each, training=source, n_bootstrap=20, progress=False)
        assert t.verification is None and not t.same_applied and any("cannot be measured" in n for n in t.notes)


def test_a_high_utility_cost_is_an_error_unless_accepted(phantom):
    source, embedder, index = phantom
    with pytest.raises(UtilityCostError) as caught:
        calibrate_threshold(index, embedder, source, rule="holdout", holdout_percentile=90, n_bootstrap=20, progress=False)
    message = str(caught.value)
    assert isinstance(caught.value, MonaiPsoError) and "\n" not in message
    assert "limit 50%" in message and "accept_utility_cost=True" in message and "--accept-utility-cost" in message
    accepted = calibrate_threshold(index, embedder, source, rule="holdout", holdout_percentile=90, accept_utility_cost=True, n_bootstrap=20, progress=False)
    assert accepted.utility_cost > 0.5 and accepted.utility_cost_accepted and any("accepted explicitly" in n for n in accepted.notes)
    assert "ACCEPTED" in accepted.describe()
    relaxed = calibrate_threshold(index, embedder, source, rule="holdout", holdout_percentile=90, max_utility_cost=0.95, n_bootstrap=20, progress=False)
    assert relaxed.utility_limit == 0.95 and not relaxed.utility_cost_accepted
    # the max rule driven by tau_same: the message names tau_same and the way out
    with pytest.raises(UtilityCostError, match="tau_same"):
        calibrate_threshold(index, embedder, _relabelled(source), training=source, min_same_auc=None, n_bootstrap=20, progress=False)


def test_new_figures_round_trip_and_old_files_still_read(phantom, tmp_path):
    source, embedder, index = phantom
    threshold = calibrate_threshold(index, embedder, source, n_bootstrap=50, progress=False)
    path = threshold.save(tmp_path / "tau.json")
    content = json.loads(path.read_text())
    assert content["verification"]["value"] == threshold.verification.value and content["same_applied"] is True
    assert content["utility_limit"] == 0.5 and content["utility_cost_accepted"] is False
    assert Threshold.load(path, embedder, index) == threshold
    old = {k: v for k, v in threshold.to_dict().items() if k not in ("verification", "same_applied", "utility_limit", "utility_cost_accepted")}
    restored = Threshold.from_dict(old)
    assert restored.verification is None and restored.same_applied is True and restored.utility_limit is None
    with pytest.raises(MonaiPsoError, match="contradicts"):
        replace(threshold, same_applied=False)
    assert VerificationAUC.from_dict(content["verification"]) == threshold.verification


def test_verification_needs_both_kinds_from_the_same_patients():
    same = PatientDistances(np.array([0.1, 0.2]), np.array(["a", "a"]))
    held = PatientDistances(np.array([0.05, 0.3, 0.01]), np.array(["a", "a", "b"]))  # "b" has no repeat: left out
    v = verification_auc(same, held, 10, np.random.default_rng(0), min_patients=1)
    assert v.n_images == 2 and v.value == pytest.approx(0.5)
    assert not v.meaningful and "not reliably nearer" in v.reason
    assert verification_auc(PatientDistances(np.zeros(0), np.zeros(0, str)), held, 10, np.random.default_rng(0)) is None


def test_cli_prints_the_auc_and_refuses_a_high_utility_cost(phantom, tmp_path):
    source, embedder, index = phantom
    index.save(tmp_path / "index")
    runner = CliRunner()
    ok = runner.invoke(main, ["calibrate", str(tmp_path / "index"), "--holdout", SOURCE, "--out", str(tmp_path / "tau.json"), "--n-bootstrap", "50", "--threads", "1"])
    assert ok.exit_code == 0, ok.output
    assert "same vs different patient: AUC" in ok.output and "tau_same applied" in ok.output and "utility cost" in ok.output
    args = ["calibrate", str(tmp_path / "index"), "--holdout", SOURCE, "--out", str(tmp_path / "costly.json"), "--n-bootstrap", "20",
            "--rule", "holdout", "--holdout-percentile", "90", "--threads", "1"]
    refused = runner.invoke(main, args)
    assert refused.exit_code != 0 and "--accept-utility-cost" in refused.output and not (tmp_path / "costly.json").exists()
    accepted = runner.invoke(main, [*args, "--accept-utility-cost"])
    assert accepted.exit_code == 0, accepted.output
    assert "ACCEPTED" in accepted.output and Threshold.load(tmp_path / "costly.json").utility_cost_accepted


KERMANY = "kermany_pedcxr_128"


def _kermany(root: Path, n_patients: int = 30, n_training: int = 400) -> DataSource:
    """Children with several images (pneumonia ids, SOURCE.md caveat 2) held out; a training sample of the others."""
    rows = list(csv.DictReader((root / "datalist.csv").open()))
    by_patient: dict[str, list[dict]] = {}
    for row in rows:
        if not row["patient_id"].startswith("normal"):
            by_patient.setdefault(row["patient_id"], []).append(row)
    patients = sorted(by_patient)
    rng = np.random.default_rng(0)
    rng.shuffle(patients)
    held = [p for p in patients if len(by_patient[p]) >= 2][:n_patients]
    others = [row for p in patients if p not in set(held) for row in by_patient[p]]
    chosen = [others[i] for i in sorted(rng.choice(len(others), n_training, replace=False))]

    def record(row, split):
        return ImageRecord(Path(row["image"]).stem, row["patient_id"], str(root / row["image"]), None, split, modality="xray", normalize="uint8")

    return DataSource([record(r, "train") for r in chosen] + [record(r, "val") for p in held for r in by_patient[p][:4]], "kermany_pedcxr_128 subsample")


@pytest.mark.shared_data
def test_real_chest_xrays_same_child_is_not_nearer_than_strangers(shared_data):
    """Measured: on these X-rays a child's other images lie farther than the nearest stranger (AUC ~0.15), so tau_same
    (2-3x the holdout part) would refuse nearly every unseen image; it is not applied and the utility cost stays low."""
    if not (shared_data / KERMANY / "datalist.csv").is_file():
        pytest.skip(f"{KERMANY} not in the shared data")
    started = time.time()
    source = _kermany(shared_data / KERMANY)
    embedder = PixelEmbedder()
    index = build_index(source, embedder, progress=False)
    threshold = calibrate_threshold(index, embedder, source, n_bootstrap=200, progress=False)
    v = threshold.verification
    assert v is not None and v.n_patients == 30 and not v.meaningful
    assert v.value < 0.5 and v.interval[1] < 0.7
    assert not threshold.same_applied and threshold.value == threshold.holdout.value < threshold.same.value
    assert threshold.utility_cost <= 0.5
    print(f"\nkermany: {v.describe()}; tau_same {threshold.same.value:.4f} vs holdout {threshold.holdout.value:.4f}; "
          f"utility cost {threshold.utility_cost:.1%}; {time.time() - started:.0f} s")
    assert time.time() - started < 60
