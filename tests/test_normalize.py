"""Intensity presets map each modality's raw values into [0, 1] and refuse non-finite input."""

import numpy as np
import pytest
import torch

from monai_pso.data import PRESETS, IntensityPreset, IntensityPresetd
from monai_pso.errors import ConfigurationError, ImageValueError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_lands_in_unit_interval(preset):
    rng = np.random.default_rng(0)
    raw = rng.uniform(-1500, 3000, size=(1, 16, 16)).astype(np.float32)
    if preset == "none":
        raw = rng.uniform(0, 1, size=(1, 16, 16)).astype(np.float32)
    out = torch.as_tensor(IntensityPreset(preset)(raw))
    assert out.shape == raw.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_ct_window_maps_air_and_bone():
    hu = np.array([[[-1000.0, 0.0, 1000.0, 3000.0]]], dtype=np.float32)
    out = torch.as_tensor(IntensityPreset("ct")(hu)).flatten().tolist()
    assert out == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_mri_percentiles_ignore_outliers():
    image = np.concatenate([np.linspace(0, 100, 999), [1e6]]).reshape(1, 10, 100).astype(np.float32)
    out = torch.as_tensor(IntensityPreset("mri")(image))
    assert float(out[0, 5, 0]) > 0.4  # a mid-range value is not crushed towards 0 by the outlier


def test_pet_suv_like_is_relative_to_mean_uptake():
    image = np.full((1, 4, 4), 2.0, np.float32)
    image[0, 0, 0] = 40.0  # mean of positives = 4.375; 40 / 4.375 > 9.1 -> near the top of [0, 10]
    out = torch.as_tensor(IntensityPreset("pet_suv")(image))
    assert float(out[0, 0, 0]) == pytest.approx(40 / (70 / 16) / 10, rel=1e-5)
    assert float(out[0, 1, 1]) == pytest.approx(2 / (70 / 16) / 10, rel=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    image = np.zeros((1, 4, 4), np.float32)
    image[0, 1, 1] = bad
    with pytest.raises(ImageValueError):
        IntensityPreset("minmax")(image)


def test_dictionary_version_reads_preset_per_item():
    transform = IntensityPresetd(["image", "mask"], allow_missing_keys=True)
    out = transform({"image": np.full((1, 2, 2), 255, np.uint8), "normalize": "uint8"})
    assert float(torch.as_tensor(out["image"]).max()) == 1.0
    assert "mask" not in out


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="preset='hounsfield': unknown intensity preset"):
        IntensityPreset("hounsfield")
