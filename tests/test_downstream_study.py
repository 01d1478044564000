"""The real-vs-synthetic study end to end at a tiny size, and its CLI.

Most tests use a STAND-IN generator: real phantom images of other patients (another phantom seed) play
the synthetic set (:class:`monai_pso.downstream.synthetic.StandInSynthetic`), so that the pipeline,
statistics, report and brute-force guard check are tested without training a diffusion model; the CLI
test trains a tiny real one (:class:`~monai_pso.downstream.synthetic.GeneratedSynthetic`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from monai.bundle import ConfigParser, run

from monai_pso.cli.main import main
from monai_pso.data import ImageRecord, load_image, load_source
from monai_pso.downstream.guard_check import nearest_training_distances, recheck_with_guard, verify_no_image_within
from monai_pso.downstream.study import StudyConfig, _verify, run_study
from monai_pso.downstream.synthetic import GeneratedSynthetic, ReleaseSynthetic, StandInSynthetic, SyntheticSet
from monai_pso.embed.views import translate
from monai_pso.guard import build_guard

pytestmark = pytest.mark.usefixtures("one_thread")

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


def test_recheck_uses_the_guards_checks_and_views_and_finds_a_planted_shifted_copy(tmp_path):
    """A training image shifted by one pixel each way (undone by the guard's views) is within tau of its source:
    the re-check with the guard's own checks and views reports it; measured without the views it would pass."""
    source = load_source(DATA)
    checker = build_guard(source, tmp_path / "guard", n_bootstrap=20, progress=False)
    train = source.split("train")
    training = np.stack([load_image(r) for r in train])
    candidates = np.stack([load_image(r) for r in load_source("phantom:2d?patients=20&acquisitions=2&size=16&seed=5")])
    released = candidates[checker.decide(candidates).released][:6]
    assert len(released) >= 3
    shifted = translate(torch.from_numpy(training[3:4]), (1, -1)).numpy()
    assert not checker.decide(shifted).released[0]
    images = np.concatenate([released, shifted])
    ids = [f"released-{i}" for i in range(len(released))] + ["planted"]
    for check in checker.checks:  # the brute force agrees with the guard's own (indexed) measurement
        np.testing.assert_allclose(nearest_training_distances(images, training, check.embedder, views=check.threshold.views), check.measure(images)[0], atol=1e-6)
    pixel = checker.checks[0]
    assert nearest_training_distances(shifted, training, pixel.embedder)[0] >= pixel.tau  # without the views: not found
    records = [ImageRecord(item, item, image, split="train", normalize="none") for item, image in zip(ids, images)]
    synthetic = SyntheticSet(records, pixel.tau, "released + planted", checks=list(checker.checks))
    result = _verify(None, synthetic, [{"item_id": item} for item in ids], train, None)
    assert result["violations"] == 1 and result["violating_items"] == ["planted"]
    assert set(result["checks"]) == {"pixel", "pixel-tiles", "copy", "copy-regions"} and all(c["violating_items"] == ["planted"] for c in result["checks"].values())
    assert result["checks"]["pixel"]["query_views"] == pixel.threshold.query_views and result["checks"]["pixel"]["n_index_items"] == len(train)
    assert result["checks"]["pixel"]["views_from"] == "the check's threshold"
    clean = recheck_with_guard(released, training, checker)
    assert clean["violations"] == 0 and clean["min_distance"] >= pixel.tau


#: Tiny generator networks (hidden ``--set`` overrides of the ldm bundle): the pipeline, not image quality.
TINY_GENERATOR = {"ae_channels": "[8,8]", "norm_num_groups": 4, "disc_channels": 8, "disc_layers": 1, "unet_channels": "[8,16]", "unet_num_head_channels": "[0,8]", "batch_size": 8}


def test_cli_trains_the_generator_guards_it_and_compares(tmp_path):
    """Without --synthetic the study trains a class-conditional LDM on train, calibrates tau on the holdout,
    generates one guarded image per training image with its label, and re-verifies every guard check."""
    settings = [arg for key, value in TINY_GENERATOR.items() for arg in ("--set", f"{key}={value}")]
    args = ["study", "--data", DATA, "--task", "classification", "--out", str(tmp_path), "--steps", "2", "--batch-size", "4",
            "--ldm-autoencoder-steps", "2", "--ldm-diffusion-steps", "2", "--ldm-sampling-steps", "2", "--threads", "1", *settings]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    train_size = report["data"]["train"]["images"]
    manifest = json.loads((tmp_path / "synthetic-release" / "manifest.json").read_text())
    assert not report["synthetic"]["is_stand_in"] and report["synthetic"]["images"] == manifest["counts"]["released"] <= train_size
    assert report["guard"]["counts"]["requested"] == train_size  # one request per training image
    train_labels = sorted(r.label for r in load_source(DATA).split("train"))
    requested = sorted(item["condition"] for item in manifest["items"])
    assert set(requested) <= set(train_labels) and len(set(train_labels)) == 2  # labels carried over, both classes
    checks = report["guard"]["verification"]["checks"]
    assert set(checks) == {"pixel", "pixel-tiles", "copy", "copy-regions"} and report["guard"]["violations"] == 0
    for check in checks.values():
        assert check["n_synthetic"] == manifest["counts"]["released"] and check["min_distance"] >= check["tau"]
    assert (tmp_path / "generator" / "models" / "model.pt").is_file() and (tmp_path / "roc.png").is_file()


def test_cli_refuses_multilabel_generation(tmp_path):
    result = CliRunner().invoke(main, ["study", "--data", DATA, "--task", "classification", "--mode", "multilabel", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--synthetic" in result.output


BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def test_bundle_study_config_runs_the_same_study(tmp_path, monkeypatch):
    """``configs/study.json`` merged over ``train.json`` runs the study with the bundle's own settings."""
    configs = BUNDLES / "classification" / "configs"
    monkeypatch.chdir(tmp_path)
    tiny_generator = {key: json.loads(value) if isinstance(value, str) else value for key, value in TINY_GENERATOR.items()}
    run(config_file=[str(configs / "train.json"), str(configs / "study.json")], meta_file=str(configs / "metadata.json"), logging_file=str(configs / "logging.conf"),
        dataset_source=DATA, output_dir=str(tmp_path / "out"), num_steps=2, batch_size=4, ldm_autoencoder_steps=2, ldm_diffusion_steps=2, ldm_sampling_steps=2,
        ldm_settings=tiny_generator)
    report = json.loads((tmp_path / "out" / "study" / "report.json").read_text())
    assert report["task"] == "classification" and report["budget"]["steps"] == 2 and report["guard"]["violations"] == 0
    assert not report["synthetic"]["is_stand_in"] and set(report["arms"]) == {"real", "synthetic", "real+synthetic"}


@pytest.mark.parametrize("name", ["denoising", "super_resolution"])
def test_bundle_study_configs_build(name):
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / name / "configs" / f) for f in ("train.json", "study.json")])
    config, synthetic = parser.get_parsed_content("study_config"), parser.get_parsed_content("synthetic")
    assert config.task == name and isinstance(synthetic, GeneratedSynthetic) and not synthetic.class_conditional
    parser["release_dir"] = "some/release"
    assert isinstance(ConfigParser(parser.get()).get_parsed_content("synthetic"), ReleaseSynthetic)
