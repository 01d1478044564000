"""The real-vs-synthetic study end to end at a tiny size, and its CLI.

The generator is a STAND-IN here: real phantom images of other patients (another phantom seed) play
the synthetic set (:class:`monai_pso.downstream.synthetic.StandInSynthetic`), so that the pipeline,
statistics, report and brute-force guard check are tested without training a diffusion model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from monai_pso.cli.main import main
from monai_pso.downstream.guard_check import verify_no_image_within
from monai_pso.downstream.study import StudyConfig, run_study
from monai_pso.downstream.synthetic import StandInSynthetic

DATA = "phantom:2d?patients=20&acquisitions=2&size=16&seed=0"
STAND_IN = StandInSynthetic("phantom:2d?patients=20&acquisitions=2&size=16&seed=5")


@pytest.mark.parametrize("task, options", [("classification", {}), ("super_resolution", {"factor": 2})])
def test_study_end_to_end(task, options, tmp_path):
    config = StudyConfig(DATA, task, options, steps=3, batch_size=4)
    report = run_study(config, STAND_IN, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["guard"]["violations"] == 0 and saved["synthetic"]["is_stand_in"]
    assert set(saved["arms"]) == {"real", "synthetic", "real+synthetic"}
    assert saved["budget"]["steps"] == 3
    if task == "classification":
        d = saved["comparisons"]["synthetic vs real"]["auroc_difference"]
        assert d["ci_low"] <= d["difference"] <= d["ci_high"] and 0 <= d["p_value"] <= 1
        assert (tmp_path / "roc.png").is_file()
    else:
        c = saved["comparisons"]["synthetic vs real"]["psnr"]
        assert {"p_t", "p_wilcoxon", "p_worse_t"} <= set(c) and (tmp_path / "boxplots.png").is_file()
    assert (tmp_path / "examples.png").is_file()
    assert "STAND-IN" in (tmp_path / "report.md").read_text()
    assert report["conclusions"] == saved["conclusions"]


def test_brute_force_check_counts_a_copied_training_image():
    rng = np.random.default_rng(0)
    train = rng.random((5, 1, 8, 8))
    synthetic = np.concatenate([rng.random((3, 1, 8, 8)), train[2:3] + 1e-4])
    out = verify_no_image_within(synthetic, train, tau=0.05, item_ids=["a", "b", "c", "copy"])
    assert out["violations"] == 1 and out["violating_items"] == ["copy"]


def test_cli_needs_a_release(tmp_path):
    result = CliRunner().invoke(main, ["study", "--data", DATA, "--task", "denoising", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--synthetic" in result.output
