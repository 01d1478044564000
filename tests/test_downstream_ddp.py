"""``multi_gpu_train.json`` of the downstream bundles, merged over ``train.json`` as in the MONAI model zoo,
runs in 2 processes on CPU (gloo) and its checkpoint serves ``inference.json``.

Each run costs two fresh interpreters importing torch and MONAI (most of its time), so only the
classification bundle is run; the denoising and super-resolution bundles share its ``multi_gpu_train.json``
(the test checks that they are identical).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import run

from ddp_support import bundle_worker, free_port

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SOURCE = "phantom:2d?patients=8&acquisitions=2&size=16"  # 12 training images: 6 per process, 2 steps of 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["classification"])
def test_multi_gpu_train_runs_two_processes_on_gloo(name, tmp_path, monkeypatch):
    configs = BUNDLES / name / "configs"
    for other in ("classification", "denoising", "super_resolution"):
        assert json.loads((BUNDLES / other / "configs" / "multi_gpu_train.json").read_text()) == json.loads((configs / "multi_gpu_train.json").read_text())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    common = {"meta_file": str(configs / "metadata.json"), "logging_file": str(configs / "logging.conf"), "output_dir": str(out)}
    files = [str(configs / "train.json"), str(configs / "multi_gpu_train.json")]
    overrides = dict(common, dataset_source=SOURCE, num_steps=2, batch_size=3)
    torch.multiprocessing.spawn(bundle_worker, args=(2, free_port(), files, overrides), nprocs=2, join=True)

    model = torch.load(out / "model.pt", weights_only=True)
    assert model and not any(k.startswith("module.") for k in model)  # saved unwrapped from DDP, by rank 0
    metrics = json.loads((out / "metrics_val.json").read_text())  # rank 0 validated
    assert metrics["n"] > 0
    run(config_file=str(configs / "inference.json"), dataset_source=SOURCE, **common)  # loads the checkpoint strictly
    assert (out / "predictions.npz").is_file()
