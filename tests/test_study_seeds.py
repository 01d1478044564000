"""The study over several generator seeds: one comparison per seed, their spread, the schema kept, and the CLI.

The synthetic sets are STAND-INs (real phantom images of other patients, kept in an order shuffled by the
seed), so that two seeds give two different training sets without training a diffusion model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from monai_pso.cli.main import main
from monai_pso.data import load_source
from monai_pso.downstream.study import StudyConfig, run_study
from monai_pso.downstream.synthetic import GeneratedSynthetic, StandInSynthetic
from monai_pso.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "phantom:2d?patients=20&acquisitions=2&size=16&seed=0"
STAND_IN = StandInSynthetic("phantom:2d?patients=20&acquisitions=2&size=16&seed=5")


@pytest.mark.parametrize("task, options, metrics", [("classification", {}, {"auroc": "auroc_difference"}), ("super_resolution", {"factor": 2}, {"psnr": "psnr", "ssim": "ssim"})])
def test_two_generator_seeds_give_two_comparisons_and_their_spread(task, options, metrics, tmp_path):
    report = run_study(StudyConfig(DATA, task, options, steps=3, batch_size=4, generator_seeds=[0, 1]), STAND_IN, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    comparison = saved["comparisons"]["synthetic vs real"]
    per_seed = comparison["per_seed"]
    assert [c["generator_seed"] for c in per_seed] == [0, 1]
    for metric, key in metrics.items():
        first, second = per_seed[0][key], per_seed[1][key]
        assert comparison[key] == first  # the headline is the first seed's, in the fields it always had
        difference = "difference" if metric == "auroc" else "mean_difference"
        assert first[difference] != second[difference]
        assert {"margin", "p_noninferior", "noninferior", "lower_bound"} <= set(first)
        assert {"within_1pp"} <= set(first) if metric == "auroc" else {"p_difference", "not_significantly_worse"} <= set(first)
        row = comparison["across_seeds"][metric]
        values = np.array([first[difference], second[difference]])
        assert row["n_seeds"] == 2 and row["differences"] == pytest.approx(values)
        assert (row["mean"], row["sd"], row["min"], row["max"]) == pytest.approx((values.mean(), values.std(ddof=1), values.min(), values.max()))
        assert row["share_noninferior"] == pytest.approx(np.mean([first["noninferior"], second["noninferior"]]))
    guard = saved["guard"]
    assert [g["generator_seed"] for g in guard["per_seed"]] == [0, 1] and guard["violations"] == sum(g["violations"] for g in guard["per_seed"]) == 0
    assert [a["generator_seed"] for a in saved["arms_per_seed"]] == [0, 1] and saved["arms_per_seed"][0]["synthetic"] == saved["arms"]["synthetic"]
    assert saved["data"]["train"]["images"] == saved["arms"]["real"]["training_images"]
    assert any("over 2 generator seeds" in line for line in report["conclusions"])


def test_a_fixed_release_serves_one_seed_only(tmp_path):
    args = ["study", "--data", DATA, "--task", "classification", "--out", str(tmp_path), "--synthetic", "phantom:2d?patients=20&size=16&seed=5", "--generator-seeds", "0,1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "no generator seed" in result.output
    result = CliRunner().invoke(main, args[:-1] + ["zero,one"])
    assert result.exit_code == 2 and "comma-separated integers" in result.output
    with pytest.raises(ConfigurationError, match="distinct"):
        StudyConfig(DATA, generator_seeds=[1, 1])


def test_a_generator_seed_reaches_the_bundle_settings():
    train = load_source(DATA).split("train")
    provider = GeneratedSynthetic(settings={"batch_size": 8})
    seeded = provider.seeded(7)
    assert seeded.bundle_settings(train)["seed"] == 7 and "seed" not in provider.settings and seeded.settings["batch_size"] == 8
