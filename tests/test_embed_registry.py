"""Creating, saving, loading and rebuilding embedders by name; the ``monai-pso embed`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from monai_pso.cli.embed import embed
from monai_pso.embed import EMBEDDERS, PixelEmbedder, ReidEmbedder, create_embedder, embedder_from_settings, load_embedder
from monai_pso.errors import DataSourceError, EmbedderSettingsError, FingerprintMismatchError

SMALL_REID = dict(spatial_dims=2, dim=8, channels=(8, 8, 8, 8), input_size=16)


def test_every_embedder_is_registered_under_its_name():
    assert {name: cls.name for name, cls in EMBEDDERS.items()} == {"pixel": "pixel", "reid": "reid", "latent": "latent", "fidelity": "fidelity", "aligned": "aligned"}
    assert isinstance(create_embedder("pixel", tiles=3), PixelEmbedder)
    assert isinstance(create_embedder("reid", **SMALL_REID), ReidEmbedder)


@pytest.mark.parametrize("call", [lambda: create_embedder("pca"), lambda: create_embedder("pixel", size=3), lambda: embedder_from_settings({"grid": 3})])
def test_unknown_names_and_settings_are_refused(call):
    with pytest.raises(EmbedderSettingsError):
        call()


def test_pixel_settings_rebuild_the_same_embedder_through_json():
    embedder = PixelEmbedder(grid=(24, 20), tiles=3, flip_axes=[0, 1])
    settings = json.loads(json.dumps(embedder.settings))  # as an index manifest stores them
    rebuilt = embedder_from_settings(settings, expected_fingerprint=embedder.fingerprint)
    images = np.random.default_rng(0).random((2, 1, 48, 40)).astype(np.float32)
    assert np.array_equal(rebuilt.embed_queries(images).vectors, embedder.embed_queries(images).vectors)
    with pytest.raises(FingerprintMismatchError):
        embedder_from_settings(settings, expected_fingerprint=PixelEmbedder().fingerprint)


def test_save_writes_json_atomically_and_load_restores(tmp_path):
    embedder = PixelEmbedder(tiles=2)
    embedder.provenance = {"note": "test"}
    path = embedder.save(tmp_path / "pixel")
    assert sorted(p.name for p in (tmp_path / "pixel").iterdir()) == ["embedder.json"]  # no temporary left, no weights
    document = json.loads(path.read_text())
    assert document["name"] == "pixel" and document["fingerprint"] == embedder.fingerprint
    loaded = load_embedder(tmp_path / "pixel", expected_fingerprint=embedder.fingerprint)
    assert loaded.settings == embedder.settings and loaded.provenance == {"note": "test"}


def test_network_embedders_rebuild_from_settings_only_once_saved(tmp_path):
    embedder = create_embedder("reid", **SMALL_REID)
    with pytest.raises(EmbedderSettingsError, match="no weights"):
        embedder_from_settings(embedder.settings)
    embedder.save(tmp_path / "moved-later")
    (tmp_path / "moved-later").rename(tmp_path / "here")
    loaded = load_embedder(tmp_path / "here")
    assert loaded.fingerprint == embedder.fingerprint
    assert embedder_from_settings(loaded.settings, expected_fingerprint=embedder.fingerprint).settings == loaded.settings


def test_weights_that_do_not_match_embedder_json_are_caught(tmp_path):
    embedder = create_embedder("reid", **SMALL_REID)
    embedder.save(tmp_path)
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    next(iter(state.values())).add_(0.5)
    torch.save(state, tmp_path / "weights.pt")
    with pytest.raises(FingerprintMismatchError, match="embedder.json"):
        load_embedder(tmp_path)


def test_missing_or_broken_folders_name_the_file(tmp_path):
    with pytest.raises(DataSourceError, match="embedder.json missing"):
        load_embedder(tmp_path)
    (tmp_path / "embedder.json").write_text("{not json")
    with pytest.raises(DataSourceError, match="cannot read"):
        load_embedder(tmp_path)


def test_cli_train_writes_the_embedder_and_reports_auc(tmp_path):
    runner = CliRunner()
    out = tmp_path / "reid"
    result = runner.invoke(embed, ["train", "phantom:2d?patients=8&acquisitions=2&size=16", "--out", str(out), "--epochs", "1", "--batch-size", "4", "--dim", "16", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "val AUC" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["embedder.json", "weights.pt"]
    document = json.loads((out / "embedder.json").read_text())
    assert document["provenance"]["epochs"] == 1 and document["provenance"]["seed"] == 1 and document["settings"]["dim"] == 16
    assert "val_auc" in document["provenance"]
    shown = runner.invoke(embed, ["info", str(out)])
    assert shown.exit_code == 0 and document["fingerprint"] in shown.output
