"""PrivacyGate / PrivacyGated: decisions recorded, the three modes, MONAI datasets, fail-closed errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from guard_support import small_guard
from monai_pso.data import load_source
from monai_pso.errors import FingerprintMismatchError, ImageValueError, IndexIntegrityError, PrivacyViolationError
from monai_pso.guard import GuardCheck, PatientHasher, audit_columns
from monai_pso.index import ReferenceIndex
from monai_pso.transforms import DECISION_KEYS, LoadRecordImaged, PrivacyGate, PrivacyGated, released_collate, released_only

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = "phantom:2d?patients=12&acquisitions=3&size=32&seed=1"


@pytest.fixture(scope="module")
def guard():
    source = load_source(SOURCE)
    checker = small_guard(source, PatientHasher(b"test salt"))
    unseen = load_source("phantom:2d?patients=12&acquisitions=1&size=32&seed=77")  # other patients
    decisions = checker.decide(np.stack([r.image for r in unseen]))
    passing = [r.image for r, ok in zip(unseen, decisions.released) if ok]
    assert passing, "no unseen phantom image passes the guard"
    return checker, source.split("train")[0], passing[0]


def test_array_gate_records_the_decision_in_meta(guard):
    checker, training, fresh = guard
    gate = PrivacyGate(checker, mode="flag")
    copy = gate(training.image)
    assert isinstance(copy, MetaTensor) and copy.meta["privacy_released"] is False
    assert copy.meta["privacy_nn_distance"] < copy.meta["privacy_threshold"]
    assert copy.meta["privacy_nearest_patient_hash"] == PatientHasher(b"test salt")(training.patient_id) != training.patient_id
    out = PrivacyGate(checker, mode="raise")(fresh)
    assert out.meta["privacy_released"] is True and out.meta["privacy_nn_distance"] >= out.meta["privacy_threshold"]
    assert torch.equal(out.as_tensor(), torch.as_tensor(fresh))  # the checked values are the returned values
    with pytest.raises(PrivacyViolationError):
        PrivacyGate(checker, mode="raise")(training.image)
    assert PrivacyGate(checker, mode="drop")(training.image) is None


def test_dict_gate_modes_and_multiple_keys(guard):
    checker, training, fresh = guard
    item = {"image": fresh, "other": training.image, "item_id": "s1"}
    flagged = PrivacyGated(["image", "other"], checker, mode="flag")(item)
    assert set(DECISION_KEYS) <= set(flagged) and flagged["privacy_released"] is False  # one key too close: item rejected
    assert flagged["image"].meta["privacy_released"] is True and flagged["other"].meta["privacy_released"] is False
    assert PrivacyGated("image", checker, mode="drop")({"image": training.image}) is None
    assert PrivacyGated("image", checker)({"image": fresh})["privacy_released"] is True
    assert PrivacyGated(["image", "mask"], checker, allow_missing_keys=True)({"image": fresh})["privacy_released"] is True
    with pytest.raises(PrivacyViolationError, match="s2"):
        PrivacyGated("image", checker)({"image": training.image, "item_id": "s2"})


def test_drop_mode_in_a_monai_dataset_and_loader(guard, tmp_path):
    checker, training, fresh = guard
    datalist = [{"image": training.image, "item_id": "copy"}, {"image": fresh, "item_id": "fresh"}, {"image": training.image * 1.0, "item_id": "copy2"}]
    transform = Compose([LoadRecordImaged("image"), PrivacyGated("image", checker, mode="drop", audit_log=tmp_path / "audit.csv")])
    loader = DataLoader(Dataset(datalist, transform), batch_size=3, collate_fn=released_collate, num_workers=0)
    (batch,) = list(loader)
    assert batch["item_id"] == ["fresh"] and batch["image"].shape == (1, 1, 32, 32)
    with (tmp_path / "audit.csv").open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames) == audit_columns(checker.names)  # the one audit schema
        rows = list(reader)
    assert [r["item"] for r in rows] == ["copy", "fresh", "copy2"] and [r["released"] for r in rows] == ["false", "true", "false"]
    assert all(training.patient_id not in ",".join(r.values()) for r in rows)  # only salted hashes, never the id
    assert released_only([None, {"privacy_released": False}, {"privacy_released": True}, {"image": 1}]) == [{"privacy_released": True}]


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((1, 32, 32), np.nan, np.float32), "NaN"),
        (np.zeros((1, 16, 16), np.float32), "built for"),
        (np.zeros((1, 32, 32, 32), np.float32), "3D"),
        (np.full((1, 32, 32), 1.2, np.float32), r"\[0, 1\]"),
        (np.zeros((2, 32, 32), np.float32), "1, \\*spatial"),
    ],
)
def test_bad_images_are_errors_never_passes(guard, image, message):
    checker, _, _ = guard
    for mode in ("flag", "drop"):
        with pytest.raises(ImageValueError, match=message):
            PrivacyGate(checker, mode=mode)(image)


def test_mismatched_or_empty_artefacts_are_refused(guard, tmp_path):
    checker, _, _ = guard
    check = checker.checks[0]
    tiles_index = ReferenceIndex.from_vectors(np.ones((2, 4), np.float32), [0, 1], ["a", "b"], ["p", "q"], source="other")
    with pytest.raises(FingerprintMismatchError):
        GuardCheck.create(tiles_index, check.threshold)
    path = check.threshold.save(tmp_path / "tau.json")
    from monai_pso.embed.pixel import PixelEmbedder

    with pytest.raises(FingerprintMismatchError):
        PrivacyGate(index=check.index, threshold=path, embedder=PixelEmbedder(smoothing=0.5))
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexIntegrityError):
        PrivacyGate(index=tmp_path / "empty", threshold=path)
    with pytest.raises(IndexIntegrityError):
        ReferenceIndex.from_vectors(np.zeros((0, 4), np.float32), [], [], [])
