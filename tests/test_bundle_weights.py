"""``benchmarks/bundle_weights.py`` on a copy of one downstream bundle, a few steps: it ships the weights and records
the figures it measured in the results file, the bundle's ``metadata.json`` and its ``docs/README.md``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bundle_weights.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bundle_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_script_ships_and_records_a_bundle(tmp_path):
    script = load_script()
    bundles = tmp_path / "bundles"
    shutil.copytree(ROOT / "bundles" / "denoising", bundles / "denoising", ignore=shutil.ignore_patterns("models"))
    steps = int(np.random.default_rng().integers(2, 5))
    results = script.main(["--bundles", "denoising", "--steps", str(steps), "--bundles-dir", str(bundles), "--out", str(tmp_path / "w.json")])
    record = results["bundles"]["denoising"]
    assert json.loads((tmp_path / "w.json").read_text()) == results and record["steps"] == {"network": steps}
    weights = bundles / "denoising" / "models" / "model.pt"
    assert record["files"] == {"models/model.pt": weights.stat().st_size}
    state = torch.load(weights, weights_only=True)
    assert state and all(torch.is_tensor(value) for value in state.values())  # a plain state dict, as the verifier's ckpt_export loads it
    metadata = json.loads((bundles / "denoising" / "configs" / "metadata.json").read_text())
    assert metadata["eval_metrics"] == {key: value for key, value in record["metrics"].items() if key != "val_images"}
    assert 0 < metadata["eval_metrics"]["val_ssim"] <= 1 and metadata["shipped_weights"]["steps"] == {"network": steps}
    readme = (bundles / "denoising" / "docs" / "README.md").read_text()
    section = readme.split(script.README_START)[1].split(script.README_END)[0]
    assert f"network {steps}" in section and f"val_psnr {record['metrics']['val_psnr']:.4g}" in section
    assert readme.count(script.README_START) == readme.count(script.README_END) == 1  # rewritten in place, not appended


def test_the_committed_bundles_hold_what_the_results_file_records():
    """The shipped files, metadata figures and README block are those ``benchmarks/results/bundle_weights.json`` recorded."""
    script = load_script()
    recorded = json.loads((ROOT / "benchmarks" / "results" / "bundle_weights.json").read_text())["bundles"]
    assert recorded
    for name, record in recorded.items():
        bundle = ROOT / "bundles" / name
        assert {path: (bundle / path).stat().st_size for path in record["files"]} == record["files"], name
        metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
        assert metadata["eval_metrics"] == {key: value for key, value in record["metrics"].items() if key != "val_images"}, name
        assert metadata["shipped_weights"]["steps"] == record["steps"], name
        readme = (bundle / "docs" / "README.md").read_text()
        assert readme.count(script.README_START) == 1 and "benchmarks/results/bundle_weights.json" in readme.split(script.README_START)[1], name
