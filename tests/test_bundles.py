"""The ldm_2d / ldm_3d bundles on CPU with tiny overrides: training, checkpoints, metadata, multi-GPU configs, presets."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run, verify_metadata

from ddp_support import bundle_worker, free_port
from monai_pso.engines import load_checkpoint
from monai_pso.engines.bundle_runs import configure_bundle
from monai_pso.guard import build_guard
from monai_pso.release.ledger import verify_ledger

pytestmark = pytest.mark.usefixtures("one_thread")  # the guard's small tensors run far faster on one thread

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SCHEMA = Path(__file__).resolve().parents[1] / ".." / "shared" / "schema" / "meta_schema_20240725.json"

TINY = {
    "ldm_2d": {"dataset_source": "phantom:2d?patients=4&acquisitions=2&size=16", "image_size": [16, 16], "latent_min_size": 16},  # the latent recipe (smaller images diffuse on pixels)
    "ldm_3d": {"dataset_source": "phantom:3d?patients=3&acquisitions=2&size=8", "image_size": [8, 8, 8]},
}
NETWORKS = {
    "batch_size": 2, "epoch_length": 2, "max_epochs": 2, "diffusion_max_epochs": 2, "adversarial_warmup_epochs": 1,
    "ae_channels": [4, 4], "latent_channels": 2, "ae_num_res_blocks": 1, "norm_num_groups": 4, "disc_channels": 4, "disc_layers": 1,
    "unet_channels": [4, 4], "unet_attention_levels": [False, True], "unet_num_head_channels": [0, 4], "unet_num_res_blocks": 1,
}


def configs(bundle: Path, *names: str) -> list[str]:
    return [str(bundle / "configs" / f"{name}.json") for name in names]


@pytest.fixture(params=["ldm_2d", "ldm_3d"])
def bundle(request, tmp_path) -> tuple[Path, dict]:
    """A copy of the bundle in a temporary folder, and its tiny overrides."""
    copy = tmp_path / request.param
    shutil.copytree(BUNDLES / request.param, copy)
    return copy, dict(TINY[request.param], **NETWORKS)


def test_train_autoencoder_then_diffusion_from_any_directory(bundle, tmp_path, monkeypatch):
    root, overrides = bundle
    monkeypatch.chdir(tmp_path)  # not the bundle folder: bundle_root comes from the config location
    run(config_file=configs(root, "train_autoencoder"), **overrides)
    run(config_file=configs(root, "train_autoencoder", "train_diffusion"), condition_mode="class", **overrides)
    ae = load_checkpoint(root / "models" / "autoencoder.pt")
    diffusion = torch.load(root / "models" / "model.pt", weights_only=True)
    assert {"autoencoder", "discriminator", "g_optimizer", "d_optimizer", "trainer"} <= set(ae)
    assert {"unet", "ema", "optimizer", "trainer"} <= set(diffusion)
    assert diffusion["trainer"]["iteration"] == 4 and diffusion["trainer"]["scale_factor"] > 0


def test_metadata_verifies_offline(bundle):
    if not SCHEMA.is_file():
        pytest.skip("schema not found")
    root, _ = bundle
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(SCHEMA))
    parser = ConfigParser()
    parser.read_meta(str(root / "configs" / "metadata.json"))
    assert "autoencoder_data_format" in parser["_meta_"] and (root / "LICENSE").is_file() and (root / "docs" / "README.md").is_file()


def test_every_config_parses_and_inference_builds_its_sampler(bundle, tmp_path):
    root, overrides = bundle
    run(config_file=configs(root, "train_autoencoder"), **overrides)
    run(config_file=configs(root, "train_autoencoder", "train_diffusion"), **overrides)
    parser = ConfigParser()
    parser.read_config(configs(root, "train_autoencoder", "train_diffusion", "inference"))
    parser.update(dict(overrides, num_inference_steps=2, bundle_root=str(root)))  # no ConfigWorkflow here
    sampler = parser.get_parsed_content("sampler")
    images = sampler([0, 1])
    assert tuple(images.shape[2:]) == tuple(overrides["image_size"]) and 0 <= float(images.min()) <= float(images.max()) <= 1


def test_ldm_3d_guarded_generation_releases_nifti_and_records_it(tmp_path):
    source = "phantom:3d?patients=6&acquisitions=2&size=8&seed=2"
    root = tmp_path / "ldm_3d"
    shutil.copytree(BUNDLES / "ldm_3d", root)
    configure_bundle(root, dict(NETWORKS, dataset_source=source, image_size=[8, 8, 8]))  # a trained bundle describes its networks
    run(config_file=configs(root, "train_autoencoder"))
    run(config_file=configs(root, "train_autoencoder", "train_diffusion"))
    checker = build_guard(source, root / "privacy", progress=False, n_bootstrap=100)
    run(config_file=configs(root, "train_autoencoder", "train_diffusion", "inference"), n=3, num_inference_steps=2, output_dir=str(tmp_path / "release"))
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["image_format"] == "nifti" and manifest["counts"]["requested"] == 3 and set(manifest["checks"]) == {"pixel", "pixel-tiles", "copy", "copy-regions"}
    images = [nib.load(tmp_path / "release" / f["path"]).get_fdata(dtype=np.float32)[None] for f in manifest["files"]]
    assert len(images) == manifest["counts"]["released"] and all(f["path"].endswith(".nii.gz") for f in manifest["files"])
    assert images and checker.decide(np.stack(images)).released.all()  # the files as written pass
    assert [e.command for e in verify_ledger(root / "privacy" / "pixel" / "index")] == ["generate"]


@pytest.mark.slow
def test_multi_gpu_configs_run_two_processes_on_gloo(tmp_path):
    root = tmp_path / "ldm_2d"
    shutil.copytree(BUNDLES / "ldm_2d", root)
    overrides = dict(TINY["ldm_2d"], **NETWORKS)
    run(config_file=configs(root, "train_autoencoder"), **overrides)
    parser = ConfigParser()
    parser.read_config(configs(root, "train_autoencoder", "multi_gpu_train_autoencoder"))
    assert parser["dataloader"]["sampler"] == "@sampler"  # the autoencoder override builds the same way
    files = configs(root, "train_autoencoder", "train_diffusion", "multi_gpu_train_diffusion")
    overrides.pop("epoch_length")
    torch.multiprocessing.spawn(bundle_worker, args=(2, free_port(), files, overrides), nprocs=2, join=True)
    diffusion = load_checkpoint(root / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in diffusion["unet"])  # saved unwrapped from DDP
    from monai_pso.engines.bundle import datalist

    per_rank = math.ceil(len(datalist(overrides["dataset_source"], "train")) / 2)  # DistributedSampler halves the data
    assert diffusion["trainer"]["epoch_length"] == math.ceil(per_rank / overrides["batch_size"])


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "relative, modality, dims",
    [
        ("ct_covid19_ny_sbu?mixed_shapes=1", "ct", 2),
        ("pet_acrin_flt_breast", "pet", 2),
        ("medmnist/pneumoniamnist_balanced_subset.npz", "xray", 2),
        ("ixi_t1_2mm/t1", "mri", 3),
    ],
)
def test_modality_presets_load_real_data(shared_data, relative, modality, dims):
    from monai.transforms import Compose, Resized

    from monai_pso.data import IntensityPresetd, LoadRecordImaged
    from monai_pso.engines.bundle import datalist, image_size

    items = datalist(str(shared_data / relative), None, modality, limit=2)
    size = [16] * dims
    transform = Compose([LoadRecordImaged("image"), IntensityPresetd("image"), Resized("image", size, mode="area")])
    for item in items:
        image = transform(item)["image"]
        assert tuple(image.shape) == (1, *size) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert float(image.max()) > float(image.min())
    assert len(image_size(modality, dims)) == dims
