"""The latent embedder: a tiny random AutoencoderKL, saved as a nested checkpoint and reloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import AutoencoderKL

from monai_pso.embed import LatentEmbedder, embedder_from_settings, image_distances, load_embedder
from monai_pso.errors import DataSourceError, EmbedderSettingsError

NETWORKS = {
    2: dict(spatial_dims=2, channels=(8, 8), latent_channels=2, num_res_blocks=1, attention_levels=(False, False), norm_num_groups=4),
    3: dict(spatial_dims=3, channels=(4, 4), latent_channels=1, num_res_blocks=1, attention_levels=(False, False), norm_num_groups=2),
}


def checkpoint(path, dims: int, seed: int = 0) -> AutoencoderKL:
    """Save a random autoencoder as the LDM bundles will: ``{"autoencoder": state_dict, "epoch": ...}``."""
    torch.manual_seed(seed)
    autoencoder = AutoencoderKL(**NETWORKS[dims])
    torch.save({"autoencoder": autoencoder.state_dict(), "epoch": torch.tensor(3)}, path)
    return autoencoder


@pytest.mark.parametrize("dims", [2, 3])
def test_checkpoint_reload_gives_same_vectors_and_fingerprint(tmp_path, dims):
    module = checkpoint(tmp_path / "ae.pt", dims)
    direct = LatentEmbedder(module, network=NETWORKS[dims])
    loaded = LatentEmbedder(network=NETWORKS[dims], weights=tmp_path / "ae.pt", state_dict_key="autoencoder")
    images = torch.rand((3, 1) + (16,) * dims)
    vectors = loaded.embed(images).vectors
    latent_values = NETWORKS[dims]["latent_channels"] * 8**dims
    assert vectors.shape == (3, 1, latent_values)
    assert np.array_equal(vectors, direct.embed(images).vectors)
    assert np.array_equal(vectors, loaded.embed(images).vectors)  # the mean, no sampling noise
    assert loaded.fingerprint == direct.fingerprint
    assert embedder_from_settings(loaded.settings, expected_fingerprint=loaded.fingerprint).fingerprint == loaded.fingerprint


def test_fingerprint_changes_with_weights_and_survives_save(tmp_path):
    first = LatentEmbedder(network=NETWORKS[2], weights=_saved(tmp_path / "a.pt", seed=0), state_dict_key="autoencoder")
    second = LatentEmbedder(network=NETWORKS[2], weights=_saved(tmp_path / "b.pt", seed=1), state_dict_key="autoencoder")
    assert first.fingerprint != second.fingerprint
    before = first.fingerprint
    with torch.no_grad():
        next(first.network.decoder.parameters()).add_(1.0)  # the decoder does not change vectors, but it is hashed
    assert first.fingerprint != before
    first.save(tmp_path / "saved")
    reloaded = load_embedder(tmp_path / "saved")
    assert reloaded.fingerprint == first.fingerprint and reloaded.settings["state_dict_key"] is None


def _saved(path, seed: int):
    checkpoint(path, 2, seed)
    return path


def test_distance_is_rms_of_latent_means(tmp_path):
    embedder = LatentEmbedder(checkpoint(tmp_path / "ae.pt", 2), network=NETWORKS[2], flip_axes=[])
    images = torch.rand(2, 1, 16, 16)
    z_a, z_b = (embedder.network.encode(images[i : i + 1])[0].detach() for i in range(2))
    expected = torch.sqrt(((z_a - z_b) ** 2).mean()).item()
    assert image_distances(embedder.embed(images[:1]), embedder.embed(images[1:]))[0, 0] == pytest.approx(expected, rel=1e-4)


def test_input_size_resamples_images(tmp_path):
    embedder = LatentEmbedder(checkpoint(tmp_path / "ae.pt", 2), network=NETWORKS[2], input_size=16)
    assert embedder.embed(torch.rand(1, 1, 28, 28)).vectors.shape == (1, 1, 2 * 8 * 8)


def test_bad_checkpoints_name_the_problem(tmp_path):
    checkpoint(tmp_path / "ae.pt", 2)
    with pytest.raises(DataSourceError, match="state_dict_key"):
        LatentEmbedder(network=NETWORKS[2], weights=tmp_path / "ae.pt", state_dict_key="unet")
    with pytest.raises(DataSourceError, match="not found"):
        LatentEmbedder(network=NETWORKS[2], weights=tmp_path / "missing.pt")
    with pytest.raises(EmbedderSettingsError, match="do not fit"):
        LatentEmbedder(network={**NETWORKS[2], "latent_channels": 3}, weights=tmp_path / "ae.pt", state_dict_key="autoencoder")
    with pytest.raises(EmbedderSettingsError, match="without network"):
        LatentEmbedder(AutoencoderKL(**NETWORKS[2])).save(tmp_path / "nowhere")
