"""Planted copies of training images are never released by the default guard; decisions match brute force.

Near-copies (:func:`guard_support.planted_copies`, magnitudes and places drawn per copy): exact copy, mirror
image, shifts of 1 and of 2 to 3 pixels, turns of 2 to 4 and of 4 to 8 degrees, Gaussian noise, intensity
scale and offset, and a half-size region pasted at a random place of another image. The default guard
(:func:`monai_pso.guard.build_guard`: whole-image and tile pixel checks and the copy checks, tau calibrated on the
``val`` split) must reject all of them; the share of unseen ``test`` images it releases is printed.
"""

from __future__ import annotations

import numpy as np
import pytest

from guard_support import brute_force_released, planted_set, recall_by_kind
from monai_pso.data import DataSource, load_image, load_source
from monai_pso.guard import PrivacyChecker, build_guard, load_checker

pytestmark = pytest.mark.usefixtures("one_thread")

PHANTOM = "phantom:2d?patients=24&acquisitions=3&size=32&seed=0"


def _check_guard(label: str, source: DataSource, checker: PrivacyChecker, n_sources: int, n_test: int | None = None) -> None:
    train = source.split("train")
    kinds, planted = planted_set(train, n_sources)
    planted_decisions = checker.decide(planted)
    recall = recall_by_kind(kinds, planted_decisions.private)  # refused by the copy checks, not by plausibility
    test_images = np.stack([load_image(r) for r in source.split("test").records[:n_test]])
    test_decisions = checker.decide(test_images)
    taus = ", ".join(f"{c.name} tau={c.tau:.4f} (rule {c.threshold.applied_rule}, near-duplicates {c.threshold.near_duplicate_share:.1%})" for c in checker.checks)
    print(f"\n[{label}] {taus}")
    print(f"[{label}] recall on {len(kinds)} planted copies: {np.mean(~planted_decisions.released):.1%}; by kind: " + ", ".join(f"{k} {v:.0%}" for k, v in recall.items()))
    print(f"[{label}] unseen test images released: {np.mean(test_decisions.released):.1%} of {len(test_images)}")

    train_images = np.stack([load_image(r) for r in train])
    queries = np.concatenate([planted, test_images])
    passed, distances = brute_force_released(checker, train_images, queries)
    np.testing.assert_array_equal(passed, np.concatenate([planted_decisions.private, test_decisions.private]))  # the copy checks' decisions
    for name, values in distances.items():
        guard_values = np.concatenate([planted_decisions.distances[name], test_decisions.distances[name]])
        np.testing.assert_allclose(guard_values, values, rtol=1e-10, atol=1e-12)
    assert recall == {kind: 1.0 for kind in recall}, f"planted copies released: {recall}"
    assert test_decisions.released.any(), "the guard released no unseen real image at all"


def test_phantom_planted_copies_are_all_rejected(tmp_path):
    source = load_source(PHANTOM)
    built = build_guard(source, tmp_path / "guard", progress=False, n_bootstrap=200)
    checker = load_checker(tmp_path / "guard")  # the guard as every gate reads it back from its folder
    assert checker.names == built.names == ["pixel", "pixel-tiles", "copy", "copy-regions"] and checker.taus == built.taus
    _check_guard("phantom", source, checker, n_sources=10)


@pytest.mark.shared_data
def test_breastmnist_planted_copies_are_all_rejected(shared_data, tmp_path):
    source = load_source(str(shared_data / "medmnist" / "breastmnist.npz"))
    checker = build_guard(source, tmp_path / "guard", progress=False, n_bootstrap=200)
    _check_guard("BreastMNIST", source, checker, n_sources=6, n_test=80)
