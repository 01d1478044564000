"""The ldm_2d bundle's size rule: diffusion on the pixels below ``latent_min_size``, on autoencoder latents from it.

A tiny bundle is trained for two steps per stage at 28 x 28 (pixel space) and at 32 x 32 with
``latent_min_size`` lowered to 32 (latent space); both are sampled through the bundle's own
``inference.json`` sampler.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import AutoencoderKL

from monai_pso.engines import PixelSpace, load_checkpoint
from monai_pso.engines.bundle_runs import generation_parser, prepare_bundle, train_bundle

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "batch_size": 4, "epoch_length": 2, "max_epochs": 1, "diffusion_max_epochs": 1, "adversarial_warmup_epochs": 1,
    "ae_channels": [4, 4], "latent_channels": 2, "norm_num_groups": 4, "disc_channels": 4, "disc_layers": 1,
    "unet_channels": [8, 8], "unet_attention_levels": [False, False], "unet_num_head_channels": [8, 8], "num_inference_steps": 2,
}


def _trained(tmp_path: Path, size: int, **settings) -> Path:
    source = f"phantom:2d?patients=6&acquisitions=2&size={size}&seed=1"
    bundle = prepare_bundle("ldm_2d", tmp_path / f"ldm-{size}", {**TINY, "dataset_source": source, "image_size": [size, size], **settings})
    train_bundle(bundle, quiet=True)
    return bundle


def test_small_images_diffuse_on_pixels(tmp_path):
    bundle = _trained(tmp_path, 28)
    parser = generation_parser(bundle, {})
    assert parser.get_parsed_content("latent_space") is False
    sampler = parser.get_parsed_content("sampler")
    assert isinstance(sampler.autoencoder, PixelSpace) and sampler.scale_factor == 1.0
    assert sampler.latent_shape == (1, 28, 28) and sampler.unet.in_channels == sampler.unet.out_channels == 1
    assert load_checkpoint(bundle / "models" / "autoencoder.pt")["pixel_space"] is True  # no autoencoder was trained
    images = sampler([3, 4])
    assert tuple(images.shape) == (2, 1, 28, 28) and 0.0 <= float(images.min()) <= float(images.max()) <= 1.0
    assert not torch.allclose(images[0], images[1])  # each seed its own draw


def test_images_from_the_threshold_keep_the_latent_model(tmp_path):
    bundle = _trained(tmp_path, 32, latent_min_size=32)
    sampler = generation_parser(bundle, {}).get_parsed_content("sampler")
    assert isinstance(sampler.autoencoder, AutoencoderKL) and sampler.latent_shape == (2, 16, 16)
    assert tuple(sampler([5]).shape) == (1, 1, 32, 32)


def test_pixel_space_round_trips_and_has_no_weights():
    images = torch.rand(3, 1, 9, 7)
    space = PixelSpace()
    mu, sigma = space.encode(images)
    assert float(mu.min()) >= -1.0 and float(mu.max()) <= 1.0 and not sigma.any()
    assert torch.allclose(space.decode_stage_2_outputs(mu), images) and not list(space.parameters())
