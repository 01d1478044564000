"""Every shipped bundle passes the checks of MONAI model-zoo's ``ci/verify_bundle.py``, re-implemented offline,
and its ``configs/inference.json`` runs out of the box with the shipped weights.

The verifier's checks: the necessary files (``configs/metadata.json``, ``LICENSE``) and the preferred ones
(``models/model.pt``, ``configs/inference.json``), the version in the changelog, the metadata against the
schema (offline: ``../shared/schema``), ``verify_net_in_out`` of ``network_def`` with the bundle's own
metadata and ``configs/inference.json`` alone, and ``ckpt_export`` of ``network_def`` with
``models/model.pt`` to TorchScript, unless the bundle documents an exclusion (the LDMs: see their
``docs/README.md``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, run, verify_metadata, verify_net_in_out

from monai_pso.engines import load_weights

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SCHEMA = BUNDLES.parent.parent / "shared" / "schema" / "meta_schema_20240725.json"
NAMES = sorted(path.parent.parent.name for path in BUNDLES.glob("*/configs/metadata.json"))
LDMS = [name for name in NAMES if name.startswith("ldm_")]
DOWNSTREAM = [name for name in NAMES if name not in LDMS]
#: Keys of an LDM's ``inference.json`` that deliberately differ from its training configs: the UNet is
#: loaded from ``models/model.pt`` instead of built fresh, and the run generates instead of training.
INFERENCE_ONLY = {"unet", "run"}
SHIPPED_LIMIT = 2_000_000  # bytes per weights file, small enough to commit and ship in the wheel


def inference_parser(bundle: Path) -> ConfigParser:
    """``configs/inference.json`` alone, with its metadata, rooted at ``bundle`` (as the verifier reads it)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(bundle), "device": "$torch.device('cpu')"})
    return parser


def test_every_bundle_is_checked():
    assert NAMES == ["classification", "denoising", "ldm_2d", "ldm_3d", "super_resolution"]


@pytest.mark.parametrize("name", NAMES)
def test_necessary_and_preferred_files_and_changelog(name):
    bundle = BUNDLES / name
    required = ["configs/metadata.json", "LICENSE", "docs/README.md", "configs/inference.json", "models/model.pt"]
    required += ["models/autoencoder.pt"] if name in LDMS else []
    assert [path for path in required if not (bundle / path).is_file()] == []
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["version"] in metadata["changelog"]
    sizes = {path.name: path.stat().st_size for path in (bundle / "models").iterdir()}
    assert sizes and all(0 < size < SHIPPED_LIMIT for size in sizes.values()), sizes


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")  # the offline schema has no published hash
@pytest.mark.parametrize("name", NAMES)
def test_metadata_verifies_against_the_schema(name):
    if not SCHEMA.is_file():
        pytest.skip(f"bundle schema not found at {SCHEMA}")
    pytest.importorskip("jsonschema")
    verify_metadata(meta_file=str(BUNDLES / name / "configs" / "metadata.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_network_shapes_verify_with_default_arguments(name):
    bundle = BUNDLES / name
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(bundle / "configs" / "inference.json"),
                      device="cpu", bundle_root=str(bundle))


@pytest.mark.parametrize("name", LDMS)
def test_diffusion_unet_shapes_verify_with_timesteps(name):
    """``network_def`` is the diffusion UNet; its forward needs ``timesteps``, which the verifier passes as an extra argument."""
    bundle = BUNDLES / name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert set(meta["network_data_format"]["inputs"]) == {"image", "timesteps"} and "autoencoder_data_format" in meta
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(bundle / "configs" / "inference.json"),
                      device="cpu", bundle_root=str(bundle), extra_forward_args={"timesteps": torch.tensor([int(np.random.default_rng().integers(1000))])})
    parser = inference_parser(bundle)
    latent = meta["network_data_format"]["inputs"]["image"]
    assert parser.get_parsed_content("latent_shape") == [latent["num_channels"], *(int(s) for s in latent["spatial_shape"])]
    assert parser.get_parsed_content("image_size") == [int(s) for s in meta["autoencoder_data_format"]["inputs"]["image"]["spatial_shape"]]


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_torchscript_export_holds_the_shipped_weights(name, tmp_path):
    bundle = BUNDLES / name
    configs = bundle / "configs"
    exported = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(bundle / "models" / "model.pt"), meta_file=str(configs / "metadata.json"),
                config_file=str(configs / "inference.json"), bundle_root=str(bundle))
    network = inference_parser(bundle).get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))  # strict: the file is network_def's whole state
    side = 8 * int(np.random.default_rng().integers(2, 5))
    image = torch.rand(2, 1, side, side)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(exported))(image), network.eval()(image), atol=1e-5)


@pytest.mark.parametrize("name", LDMS)
def test_ldm_weights_fit_their_networks_and_torchscript_stays_excluded(name):
    """The shipped checkpoints load strictly into ``autoencoder_def`` / ``network_def``; the documented TorchScript
    exclusion is still true (if MONAI makes these networks scriptable, the exclusion must go)."""
    bundle = BUNDLES / name
    parser = inference_parser(bundle)
    autoencoder = load_weights(parser.get_parsed_content("autoencoder_def"), bundle / "models" / "autoencoder.pt", "autoencoder")
    unet = load_weights(parser.get_parsed_content("network_def"), bundle / "models" / "model.pt", "ema")
    assert parser.get_parsed_content("scale_factor") > 0
    for network in (autoencoder, unet):
        with pytest.raises(Exception):  # noqa: B017 (torch.jit raises several kinds)
            torch.jit.script(network)


@pytest.mark.parametrize("name", LDMS)
def test_inference_repeats_the_training_settings(name):
    """``inference.json`` runs alone, so it repeats the networks' settings; merged after training, it changes none."""
    configs = BUNDLES / name / "configs"
    inference = json.loads((configs / "inference.json").read_text())
    training = {**json.loads((configs / "train_autoencoder.json").read_text()), **json.loads((configs / "train_diffusion.json").read_text())}
    assert {"network_def", "autoencoder_def"} <= set(inference) and "unet_def" not in {**inference, **training}
    assert {key for key in inference if key in training and inference[key] != training[key]} == INFERENCE_ONLY


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_downstream_inference_runs_out_of_the_box(name, tmp_path, monkeypatch):
    bundle = tmp_path / name
    shutil.copytree(BUNDLES / name, bundle)
    monkeypatch.chdir(bundle)
    run(config_file="configs/inference.json", meta_file="configs/metadata.json")
    predictions = np.load(bundle / "runs" / name / "predictions.npz")
    test_cases = len(inference_parser(bundle).get_parsed_content("datalist"))
    assert len(predictions["pred"]) == len(predictions["item_id"]) == test_cases > 0
    assert np.isfinite(predictions["pred"]).all() and 0 <= predictions["pred"].min() <= predictions["pred"].max() <= 1


@pytest.mark.parametrize("name", LDMS)
def test_ldm_inference_runs_out_of_the_box_with_the_shipped_guard(name, tmp_path, monkeypatch):
    """The shipped guard ``privacy/`` is built by the current guard code: after a change to a check's embedder or
    the guard folder's format, rebuild it with ``python benchmarks/bundle_weights.py --guard-only``."""
    from monai_pso.guard import load_checker
    from monai_pso.release import open_release

    bundle = tmp_path / name
    shutil.copytree(BUNDLES / name, bundle)
    monkeypatch.chdir(bundle)
    requested = int(np.random.default_rng().integers(2, 4))
    run(config_file="configs/inference.json", n=requested, num_inference_steps=3)  # fewer steps than the default 50, to keep seconds
    release = open_release(bundle / "release")
    assert release.counts["requested"] == requested and release.counts["released"] >= 1
    images = np.stack([read_released(bundle / "release" / entry["path"]) for entry in release.manifest["files"]])
    assert len(images) == release.counts["released"] and load_checker(bundle / "privacy").decide(images).released.all()  # the files as written pass


def read_released(path: Path) -> np.ndarray:
    """A released PNG (2D, 8 bit) or NIfTI (3D) file as the float image ``(1, *spatial)`` in [0, 1]."""
    if path.suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path), dtype=np.float32)[None] / 255.0
    import nibabel as nib

    return nib.load(path).get_fdata(dtype=np.float32)[None]
