"""``offline_perceptual_loss`` from a local torch hub folder (RadImageNet 2D / 2.5D, MedicalNet 3D), never the network."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import AutoencoderKL
from monai.utils import optional_import

from monai_pso.engines import AutoencoderTrainer, offline_perceptual_loss
from monai_pso.engines.losses import HUB_REPO_FOLDER
from monai_pso.errors import ConfigurationError, DataSourceError

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
HUBCONF = '''
import torch


def radimagenet_resnet50(**kwargs):  # RGB slices (N, 3, H, W) -> features (N, C, h, w), like the ResNet-50 trunk
    return torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)


def medicalnet_resnet10_23datasets(**kwargs):  # one channel (N, 1, D, H, W) -> features (N, C, d, h, w)
    return torch.nn.Conv3d(1, 4, kernel_size=3, padding=1)
'''


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """A torch hub folder holding a stand-in for MONAI's perceptual-models repository; any download fails."""

    def offline(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "urlopen", offline)  # torch.hub holds its own reference
    repo = tmp_path / "hub" / HUB_REPO_FOLDER
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    return repo.parent


@pytest.mark.parametrize(
    "spatial_dims, network_type, similarity",
    [
        (2, None, "RadImageNetPerceptualSimilarity"),
        (3, None, "MedicalNetPerceptualSimilarity"),
        (3, "radimagenet_resnet50", "RadImageNetPerceptualSimilarity"),  # 2.5D
    ],
)
def test_hub_folder_loss_is_zero_for_identical_images_only(hub, spatial_dims, network_type, similarity):
    before = torch.hub.get_dir()
    loss = offline_perceptual_loss(spatial_dims, hub, network_type=network_type)
    assert torch.hub.get_dir() == before and type(loss.perceptual_function).__name__ == similarity
    images = torch.rand(2, 1, *[8] * spatial_dims)
    assert float(loss(images, images.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(images, torch.rand_like(images))) > 0


def test_hub_folder_is_restored_when_loading_fails(hub):
    before = torch.hub.get_dir()
    with pytest.raises(RuntimeError, match="medicalnet_resnet50_23datasets"):  # not in the stand-in hubconf
        offline_perceptual_loss(3, hub, network_type="medicalnet_resnet50_23datasets")
    assert torch.hub.get_dir() == before


def test_hub_folder_without_the_repository_is_named_in_the_error(tmp_path):
    with pytest.raises(DataSourceError, match=HUB_REPO_FOLDER):
        offline_perceptual_loss(2, tmp_path)


@pytest.mark.parametrize(
    "spatial_dims, network_type, pretrained, message",
    [
        (2, "medicalnet_resnet10_23datasets", True, "3D network"),
        (2, "alex", False, "LPIPS"),
        (2, "resnet50", True, "would be downloaded"),
        (2, "resnet", True, "network_type='resnet': unknown"),
    ],
)
def test_routes_that_would_download_or_cannot_work_are_refused(hub, spatial_dims, network_type, pretrained, message):
    weights = hub if network_type.startswith("medicalnet") else None
    with pytest.raises(ConfigurationError, match=message):
        offline_perceptual_loss(spatial_dims, weights, network_type=network_type, pretrained=pretrained)


@pytest.mark.skipif(optional_import("torchvision")[1], reason="torchvision is installed")
@pytest.mark.parametrize("pretrained", [True, False])
def test_resnet50_routes_name_torchvision_when_it_is_missing(tmp_path, pretrained):
    weights = tmp_path / "resnet50.pth"
    torch.save({}, weights)
    with pytest.raises(ImportError, match="torchvision"):
        offline_perceptual_loss(2, weights if pretrained else None, network_type="resnet50", pretrained=pretrained)


def test_autoencoder_trainer_adds_the_perceptual_term(hub):
    ae = AutoencoderKL(2, 1, 1, channels=(4, 4), latent_channels=2, num_res_blocks=1, norm_num_groups=4, attention_levels=(False, False),
                       with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    trainer = AutoencoderTrainer("cpu", 1, [{"image": torch.rand(2, 1, 16, 16)}], ae, torch.optim.Adam(ae.parameters()),
                                 perceptual_loss=offline_perceptual_loss(2, hub), perceptual_weight=1.0)
    trainer.run()
    output = trainer.state.output
    assert output["perceptual_loss"] > 0
    assert output["loss"] == pytest.approx(output["recon_loss"] + output["perceptual_loss"] + 1e-6 * output["kl_loss"], rel=1e-4)


@pytest.mark.parametrize("bundle, network, similarity", [("ldm_2d", None, "RadImageNet"), ("ldm_3d", None, "MedicalNet"), ("ldm_3d", "radimagenet_resnet50", "RadImageNet")])
def test_bundle_keys_choose_the_network(hub, bundle, network, similarity):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train_autoencoder.json"))
    parser.update({"perceptual_weights": str(hub), "perceptual_network": network})
    assert type(parser.get_parsed_content("perceptual_loss").perceptual_function).__name__ == f"{similarity}PerceptualSimilarity"
