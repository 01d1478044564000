"""Non-inferiority tests of the study (``monai_pso.downstream.statistics``): size at the margin, power,
agreement with the two-sided 90% interval, statsmodels and scipy, and the seeds' own readings.

Scores and per-image metrics are simulated where the truth is known: binormal classifier scores whose
AUROCs are ``Phi(mu / sqrt 2)``, and paired per-image metrics with a known mean difference. Every
simulation draws its settings (AUROC, margin, correlation, sample size, spread) at random.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from monai_pso.downstream.statistics import (
    NONINFERIORITY_MARGINS,
    WITHIN_1PP,
    across_seeds,
    add_noninferiority,
    delong_test,
    noninferiority_test,
    paired_tests,
)

ALPHA = 0.05


def _binormal(rng: np.random.Generator, n: int, aurocs: tuple[float, float], correlation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated score vectors whose true AUROCs are ``aurocs`` (unit-variance binormal)."""
    y = rng.integers(0, 2, n)
    common = rng.normal(0, 1, n)
    scores = [np.sqrt(2) * stats.norm.ppf(a) * y + np.sqrt(correlation) * common + np.sqrt(1 - correlation) * rng.normal(0, 1, n) for a in aurocs]
    return y, scores[0], scores[1]


def _classification(rng: np.random.Generator, true_difference: float, margin: float, n: int, correlation: tuple[float, float] = (0.3, 0.85)) -> dict:
    reference = rng.uniform(0.72, 0.9)
    y, candidate, real = _binormal(rng, n, (reference + true_difference, reference), rng.uniform(*correlation))
    comparison = {"auroc_difference": delong_test(y, candidate, real).to_dict(), "method": "paired DeLong test"}
    return add_noninferiority(comparison, {"auroc": margin})["auroc_difference"]


def _restoration(rng: np.random.Generator, true_difference: float, spread: float, n: int, margin: float) -> dict:
    reference = rng.normal(30.0, 3.0, n)
    candidate = reference + true_difference + rng.normal(0, spread, n)
    return add_noninferiority({"psnr": paired_tests(candidate, reference)}, {"psnr": margin})["psnr"]


def _rate_is_about(rejections: int, trials: int, rate: float) -> bool:
    """``rate`` lies within the 99.9% Clopper-Pearson interval of ``rejections`` of ``trials``."""
    interval = stats.binomtest(rejections, trials).proportion_ci(confidence_level=0.999)
    return interval.low <= rate <= interval.high


def test_delong_noninferiority_rejects_about_alpha_of_nulls_at_the_margin():
    rng = np.random.default_rng(11)
    rejections = 0
    for _ in range(400):
        margin = rng.uniform(0.03, 0.08)
        rejections += _classification(rng, -margin, margin, int(rng.integers(250, 400)))["noninferior"]
    assert _rate_is_about(rejections, 400, ALPHA), rejections


def test_delong_noninferiority_has_power_when_the_models_are_equal():
    rng = np.random.default_rng(12)
    shown = [_classification(rng, 0.0, 0.05, 600, correlation=(0.8, 0.9))["noninferior"] for _ in range(100)]
    assert np.mean(shown) >= 0.9


def test_delong_noninferiority_refuses_a_clearly_worse_model():
    rng = np.random.default_rng(13)
    verdicts = [_classification(rng, -rng.uniform(0.12, 0.2), 0.05, 400) for _ in range(50)]
    assert not any(v["noninferior"] for v in verdicts) and not any(v["within_1pp"] for v in verdicts)


def test_noninferior_is_the_lower_end_of_the_two_sided_90_percent_interval_above_minus_margin():
    rng = np.random.default_rng(14)
    for _ in range(200):
        margin = rng.uniform(0.01, 0.1)
        y, a, b = _binormal(rng, int(rng.integers(40, 300)), (rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9)), rng.uniform(0.0, 0.9))
        verdict = add_noninferiority({"auroc_difference": delong_test(y, a, b).to_dict()}, {"auroc": margin})["auroc_difference"]
        ninety = delong_test(y, a, b, confidence=0.90)
        assert verdict["lower_bound"] == pytest.approx(ninety.ci_low, abs=1e-12)
        assert verdict["noninferior"] == (ninety.ci_low > -margin)


def test_paired_t_noninferiority_size_at_the_margin_and_power():
    rng = np.random.default_rng(15)
    at_margin = []
    for _ in range(400):
        margin = rng.uniform(0.2, 1.0)
        at_margin.append(_restoration(rng, -margin, rng.uniform(0.2, 2.0), int(rng.integers(15, 80)), margin)["noninferior"])
    assert _rate_is_about(int(np.sum(at_margin)), 400, ALPHA), np.sum(at_margin)
    equal = [_restoration(rng, 0.0, rng.uniform(0.2, 0.6), int(rng.integers(40, 80)), 0.5)["noninferior"] for _ in range(100)]
    assert np.mean(equal) >= 0.9


def test_paired_t_noninferiority_matches_statsmodels_and_scipy():
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    rng = np.random.default_rng(16)
    for _ in range(20):
        n, margin = int(rng.integers(5, 120)), rng.uniform(0.001, 1.0)
        reference = rng.normal(0.8, 0.1, n)
        candidate = reference + rng.uniform(-1.5, 0.5) * margin + rng.normal(0, rng.uniform(0.01, 1.0), n)
        verdict = add_noninferiority({"ssim": paired_tests(candidate, reference)}, {"ssim": margin}, alpha=ALPHA)["ssim"]
        _, lower_test, _ = weightstats.ttost_paired(candidate, reference, -margin, np.inf)
        assert verdict["p_noninferior"] == pytest.approx(lower_test[1], rel=1e-9, abs=1e-15) and lower_test[2] == n - 1
        assert verdict["p_noninferior"] == pytest.approx(stats.ttest_1samp(candidate - reference, -margin, alternative="greater").pvalue, rel=1e-9, abs=1e-15)
        described = weightstats.DescrStatsW(candidate - reference)
        assert verdict["lower_bound"] == pytest.approx(described.tconfint_mean(alpha=2 * ALPHA)[0], rel=1e-9)
        assert verdict["p_difference"] == pytest.approx(described.ttest_mean(0.0)[1], rel=1e-9, abs=1e-15)


def test_the_seeds_reading_calls_worse_only_on_the_worse_side_at_about_half_alpha():
    rng = np.random.default_rng(17)
    null = [_restoration(rng, 0.0, rng.uniform(0.1, 1.0), int(rng.integers(15, 80)), 0.5) for _ in range(400)]
    called_worse = sum(not v["not_significantly_worse"] for v in null)
    assert _rate_is_about(called_worse, 400, ALPHA / 2), called_worse
    assert all(v["not_significantly_worse"] == (v["p_difference"] > ALPHA or v["mean_difference"] >= 0) for v in null)
    clearly_worse = [_restoration(rng, -rng.uniform(1.0, 3.0), 0.3, 40, 0.5) for _ in range(20)]
    assert not any(v["not_significantly_worse"] or v["noninferior"] for v in clearly_worse)


def test_within_1pp_reads_the_point_estimate_one_sided():
    rng = np.random.default_rng(18)
    for difference in np.concatenate([rng.uniform(-WITHIN_1PP + 1e-6, 0.3, 50), rng.uniform(-0.3, -WITHIN_1PP - 1e-6, 50)]):
        verdict = add_noninferiority({"auroc_difference": {"difference": float(difference), "se": rng.uniform(0.001, 0.1)}})["auroc_difference"]
        assert verdict["within_1pp"] == (difference >= -WITHIN_1PP)
        assert verdict["margin"] == NONINFERIORITY_MARGINS["auroc"]


def test_a_difference_without_spread_is_decided_by_itself():
    assert noninferiority_test(-0.04, 0.0, 0.05)["noninferior"] and not noninferiority_test(-0.06, 0.0, 0.05)["noninferior"]
    with pytest.raises(ValueError, match="margin"):
        noninferiority_test(0.0, 0.1, -0.05)


def test_across_seeds_summarises_the_per_seed_differences_and_verdicts():
    rng = np.random.default_rng(19)
    n_seeds = int(rng.integers(2, 6))
    per_seed = [add_noninferiority({"psnr": paired_tests(r + rng.uniform(-1, 0.5) + rng.normal(0, 0.5, 30), r), "ssim": paired_tests(r / 40, r / 40 + rng.normal(0, 0.01, 30))})
                for r in [rng.normal(30, 2, 30) for _ in range(n_seeds)]]
    summary = across_seeds(per_seed)
    assert set(summary) == {"psnr", "ssim"}
    for metric, row in summary.items():
        differences = np.array([c[metric]["mean_difference"] for c in per_seed])
        assert row["n_seeds"] == n_seeds and row["differences"] == pytest.approx(differences)
        assert (row["mean"], row["sd"], row["min"], row["max"]) == pytest.approx((differences.mean(), differences.std(ddof=1), differences.min(), differences.max()))
        assert row["share_noninferior"] == pytest.approx(np.mean([c[metric]["noninferior"] for c in per_seed]))
        assert row["share_not_significantly_worse"] == pytest.approx(np.mean([c[metric]["not_significantly_worse"] for c in per_seed]))
    assert across_seeds(per_seed[:1])["psnr"]["sd"] is None
