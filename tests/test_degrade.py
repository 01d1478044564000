"""Clean/degraded pairs: simulated low dose and downsampling, array and dictionary versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose

from monai_pso.data import IntensityPresetd, LoadRecordImaged, load_source
from monai_pso.data.degrade import Downsample, Downsampled, SimulateLowDose, SimulateLowDosed
from monai_pso.errors import ConfigurationError, ImageValueError

FLAT = np.full((1, 64, 64), 0.5, np.float32)


@pytest.mark.parametrize("kind", ["poisson", "gaussian"])
def test_low_dose_noise_follows_the_dose(kind):
    counts = 1e4
    for dose in (1.0, 0.1):
        noisy = SimulateLowDose(dose=dose, kind=kind, counts=counts, seed=0)(FLAT)
        expected_std = np.sqrt(0.5 / (counts * dose))
        assert noisy.std() == pytest.approx(expected_std, rel=0.1)
        assert noisy.mean() == pytest.approx(0.5, abs=3 * expected_std)
        assert noisy.dtype == np.float32 and noisy.shape == FLAT.shape


def test_low_dose_seed_clip_and_types():
    same = [SimulateLowDose(0.2, seed=5)(FLAT) for _ in range(2)]
    other = SimulateLowDose(0.2, seed=6)(FLAT)
    assert np.array_equal(*same) and not np.array_equal(same[0], other)
    bright = SimulateLowDose(0.01, counts=100, seed=0)(np.ones((1, 8, 8, 8), np.float32))
    assert bright.min() >= 0.0 and bright.max() <= 1.0
    unclipped = SimulateLowDose(0.01, counts=100, clip=False, seed=0)(np.ones((1, 8, 8, 8), np.float32))
    assert unclipped.max() > 1.0
    tensor = SimulateLowDose(0.5, seed=0)(torch.as_tensor(FLAT))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32


def test_low_dose_rejects_bad_arguments():
    for kwargs in ({"dose": 0.0}, {"dose": 1.5}, {"kind": "speckle"}, {"counts": -1}):
        with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
            SimulateLowDose(**kwargs)
    with pytest.raises(ImageValueError):
        SimulateLowDose()(np.full((1, 4, 4), np.nan, np.float32))


def test_low_dose_dict_is_reproducible_per_item():
    items = [{"image": FLAT.copy(), "item_id": name} for name in ("a", "b", "c")]
    forward = [SimulateLowDosed("image", dose=0.25, seed=1)(item) for item in items]
    backward = [SimulateLowDosed("image", dose=0.25, seed=1)(item) for item in reversed(items)][::-1]
    for f, b, item in zip(forward, backward, items):
        assert np.array_equal(f["degraded"], b["degraded"])
        assert np.array_equal(f["image"], item["image"])  # the clean image is kept
    assert not np.array_equal(forward[0]["degraded"], forward[1]["degraded"])
    reseeded = SimulateLowDosed("image", dose=0.25, seed=2)(items[0])["degraded"]
    assert not np.array_equal(reseeded, forward[0]["degraded"])


def test_low_dose_dict_keys():
    no_id = SimulateLowDosed("image", seed=0)({"image": FLAT})
    assert no_id["degraded"].shape == FLAT.shape
    two = SimulateLowDosed(["a", "b"], output_key=["a_low", "b_low"], seed=0, allow_missing_keys=True)({"a": FLAT, "item_id": "x"})
    assert set(two) == {"a", "a_low", "item_id"}
    with pytest.raises(ConfigurationError, match="one output key per key"):
        SimulateLowDosed(["a", "b"], output_key="degraded")


def test_downsample_is_area_averaging_2d_and_3d():
    rng = np.random.default_rng(0)
    image2d = rng.random((1, 16, 12)).astype(np.float32)
    expected2d = image2d.reshape(1, 4, 4, 3, 4).mean(axis=(2, 4))
    assert np.allclose(Downsample(4)(image2d), expected2d, atol=1e-6)
    image3d = rng.random((1, 8, 8, 4)).astype(np.float32)
    expected3d = image3d.reshape(1, 4, 2, 4, 2, 2, 2).mean(axis=(2, 4, 6))
    assert np.allclose(Downsample(2)(image3d), expected3d, atol=1e-6)


def test_downsample_resize_back():
    image = np.random.default_rng(1).random((1, 8, 8)).astype(np.float32)
    blocky = Downsample(2, resize_back=True)(image)
    assert blocky.shape == image.shape
    assert np.allclose(blocky[0, ::2, ::2], Downsample(2)(image)[0]) and np.allclose(blocky[0, ::2], blocky[0, 1::2])
    smooth = Downsample(2, resize_back=True, mode="linear")(torch.as_tensor(image))
    assert isinstance(smooth, torch.Tensor) and smooth.shape == image.shape
    assert Downsample(4, resize_back=True, mode="linear")(np.ones((1, 8, 8, 8), np.float32)).shape == (1, 8, 8, 8)
    with pytest.raises(ImageValueError):
        Downsample(2, resize_back=True, mode="cubic")(np.ones((1, 4, 4, 4), np.float32))
    with pytest.raises(ImageValueError):
        Downsample(8)(np.ones((1, 4, 4), np.float32))


def test_pairs_in_a_monai_pipeline(phantom_2d_source):
    datalist = load_source(phantom_2d_source).datalist("train")[:4]
    pipeline = Compose(
        [
            LoadRecordImaged("image"),
            IntensityPresetd("image"),
            SimulateLowDosed("image", output_key="noisy", dose=0.25, seed=0),
            Downsampled("image", output_key="low", factor=2),
        ]
    )
    first, again = Dataset(datalist, pipeline)[0], Dataset(datalist, pipeline)[0]
    assert first["noisy"].shape == first["image"].shape == (1, 32, 32) and first["low"].shape == (1, 16, 16)
    assert torch.equal(torch.as_tensor(first["noisy"]), torch.as_tensor(again["noisy"]))
    assert float((torch.as_tensor(first["noisy"]) - torch.as_tensor(first["image"])).abs().mean()) > 0
