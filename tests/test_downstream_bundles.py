"""The classification, denoising and super-resolution bundles: train a few steps on the phantom, infer, verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import run, verify_metadata, verify_net_in_out

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "schema" / "meta_schema_20240725.json"


@pytest.mark.parametrize("name", ["classification", "denoising", "super_resolution"])
def test_bundle_trains_infers_and_verifies(name, tmp_path, monkeypatch):
    configs = BUNDLES / name / "configs"
    monkeypatch.chdir(tmp_path)  # runnable from any working directory
    common = {"meta_file": str(configs / "metadata.json"), "logging_file": str(configs / "logging.conf"), "output_dir": str(tmp_path / "out")}
    run(config_file=str(configs / "train.json"), num_steps=2, batch_size=4, **common)
    metrics = json.loads((tmp_path / "out" / "metrics_val.json").read_text())
    assert metrics["n"] > 0 and ("accuracy" in metrics if name == "classification" else 0 < metrics["ssim"]["mean"] <= 1)
    run(config_file=str(configs / "inference.json"), **common)
    assert (tmp_path / "out" / "predictions.npz").is_file()
    verify_net_in_out(net_id="network_def", meta_file=common["meta_file"], config_file=str(configs / "inference.json"), n=2, any=1)
    if not SCHEMA.is_file():
        pytest.skip(f"local bundle schema not found at {SCHEMA}")
    verify_metadata(meta_file=common["meta_file"], filepath=str(SCHEMA))
    for required in ("train.json", "inference.json", "multi_gpu_train.json", "logging.conf"):
        assert (configs / required).is_file()
    assert (BUNDLES / name / "LICENSE").is_file() and (BUNDLES / name / "docs" / "README.md").is_file()
