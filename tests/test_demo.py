"""``monai-pso demo`` end to end at tiny size (hidden ``--set`` overrides): its release, its overview picture, the
audit command it prints (run as printed), then ``generate`` on the bundle it trained."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from guard_support import brute_force_released
from monai_pso.cli.main import main
from monai_pso.data import load_image, load_source
from monai_pso.engines.bundle_runs import generation_parser
from monai_pso.guard import PrivacyChecker, load_checker
from monai_pso.release.ledger import verify_ledger
from monai_pso.release.overview import draw_again, overview_path, read_draws, refusal_reason

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


def _printed_command(output: str, prefix: str) -> list[str]:
    lines = [line.removeprefix(prefix) for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output
    return shlex.split(lines[0])


def test_demo_releases_draws_its_overview_prints_a_runnable_audit_and_its_bundle_generates_again(tmp_path):
    settings = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    out = tmp_path / "demo output"  # a space: the printed command must quote it
    result = CliRunner().invoke(main, ["demo", "--data", SOURCE, "--out", str(out), "--n", "6", "--steps", "2", *settings], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    release, model = out / "release", out / "model"
    for line in ("images:", "audit log:", "summary:", "manifest:", "tau: ", "rejection rate", "overview:"):
        assert line in result.output
    assert "Epoch[" not in result.output and "Iter:" not in result.output  # progress bars, not per-epoch log lines
    assert {"images", "audit.csv", "draws.csv", "summary.json", "distances.png", "manifest.json"} == {p.name for p in release.iterdir()}  # no picture of training images inside
    assert set(json.loads((out / "demo.json").read_text())["stage_seconds"]) == {"training", "guard", "generation", "overview"}

    checker = load_checker(model / "privacy")
    training = np.stack([load_image(r) for r in load_source(SOURCE).split("train")])
    counts = json.loads((release / "summary.json").read_text())["counts"]
    draws = read_draws(release)
    assert counts["requested"] == 6 and counts["released"] + counts["too_close"] + counts["implausible"] == 6 == counts["released"] + counts["dropped"]
    assert counts["draws"] == len(draws) >= 6 and counts["released"] == len(list((release / "images").iterdir())) > 0
    for name, distances in _certified_distances(release, checker, training).items():
        assert (distances >= checker.taus[name]).all()

    picture = Image.open(overview_path(release))
    assert picture.format == "PNG" and picture.width > 400 and picture.height > 400
    for row in draws:  # every refused draw has a reason the overview can print
        reason = refusal_reason(row, checker.names).split(":")[0]
        assert reason == "released" if row["released"] == "true" else reason in ("too_close", "implausible")
    workflow = generation_parser(model, {"n": 6}).get_parsed_content("workflow")
    rows = draws[-3:]  # the last draws: redraws among them when the guard refused any
    for image, row in zip(draw_again(release, workflow, rows), rows):  # drawn again from its seed: the image the guard decided on
        decision = checker.decide(image[None]).row(0)
        assert [decision[f"{name}_distance"] for name in checker.names] == pytest.approx([float(row[f"{name}_distance"]) for name in checker.names], rel=1e-5)
        assert decision["released"] == (row["released"] == "true")

    audit = _printed_command(result.output, "next: ")
    assert audit[:2] == ["monai-pso", "audit"]
    audited = CliRunner().invoke(main, audit[1:], catch_exceptions=False)
    assert audited.exit_code == 0, audited.output
    report = json.loads((out / "audit" / "report.json").read_text())
    assert report["counts"]["released_images"] == counts["released"] and 0.0 <= report["dcr_p_value"] <= 1.0

    again = CliRunner().invoke(main, ["generate", "--bundle", str(model), "--n", "3", "--out", str(tmp_path / "again")], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["provenance"]["num_inference_steps"] == 2  # the demo's settings were kept
    assert [e.command for e in verify_ledger(model / "privacy" / "pixel" / "index")] == ["generate", "generate"]
