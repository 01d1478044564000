"""``monai-pso demo`` end to end at tiny size (hidden ``--set`` overrides), then ``generate`` on the bundle it trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from guard_support import brute_force_released
from monai_pso.cli.main import main
from monai_pso.data import load_image, load_source
from monai_pso.guard import PrivacyChecker, load_checker
from monai_pso.release.ledger import verify_ledger

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = "phantom:2d?patients=8&acquisitions=3&size=16&seed=1"
TINY = {
    "max_epochs": 2, "diffusion_max_epochs": 2, "adversarial_warmup_epochs": 1, "batch_size": 8, "ae_channels": "[8, 8]",
    "norm_num_groups": 4, "disc_channels": 8, "disc_layers": 1, "unet_channels": "[8, 16]", "unet_num_head_channels": "[0, 8]",
}


def _certified_distances(release, checker: PrivacyChecker, training: np.ndarray) -> dict[str, np.ndarray]:
    manifest = json.loads((release / "manifest.json").read_text())
    images = np.stack([np.asarray(Image.open(release / f["path"]), np.float32)[None] / 255.0 for f in manifest["files"]])
    return brute_force_released(checker, training, images)[1]


def test_demo_runs_end_to_end_and_its_bundle_generates_again(tmp_path):
    settings = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(main, ["demo", "--data", SOURCE, "--out", str(tmp_path), "--n", "6", "--steps", "2", *settings], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    release, model = tmp_path / "release", tmp_path / "model"
    for line in ("images:", "audit log:", "summary:", "manifest:", "tau: pixel", "rejection rate"):
        assert line in result.output
    assert "Epoch[" not in result.output and "Iter:" not in result.output  # progress bars, not per-epoch log lines
    assert {"images", "audit.csv", "summary.json", "distances.png", "manifest.json"} <= {p.name for p in release.iterdir()}

    primary = model / "privacy" / "pixel"
    checker = load_checker(model / "privacy")
    training = np.stack([load_image(r) for r in load_source(SOURCE).split("train")])
    summary = json.loads((release / "summary.json").read_text())
    assert summary["counts"]["requested"] == 6 and summary["checks"]["pixel"]["tau"] == checker.taus["pixel"]
    assert 0 < summary["counts"]["released"] == len(list((release / "images").iterdir()))
    for name, distances in _certified_distances(release, checker, training).items():
        assert (distances >= checker.taus[name]).all()

    again = CliRunner().invoke(main, ["generate", "--bundle", str(model), "--n", "3", "--out", str(tmp_path / "again")], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["provenance"]["num_inference_steps"] == 2  # the demo's settings were kept
    assert [e.command for e in verify_ledger(primary / "index")] == ["generate", "generate"]
