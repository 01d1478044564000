"""Intervals of the audit: Wilson agrees with SciPy and covers, the AUC bootstrap covers, risk follows Anonymeter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from monai_pso.audit.intervals import Rate, Risk, z_value
from monai_pso.audit.membership import membership_signal, rank_auc
from monai_pso.errors import ConfigurationError

EXPERIMENTS = 300


@pytest.mark.parametrize("successes, trials", [(0, 20), (7, 20), (20, 20), (31, 97)])
def test_wilson_matches_scipy(successes, trials):
    expected = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    assert np.allclose(Rate(successes, trials).ci, (expected.low, expected.high), atol=1e-12)


@pytest.mark.parametrize("p, n", [(0.5, 60), (0.3, 50), (0.1, 120)])  # exact coverage 0.948, 0.957, 0.954
def test_wilson_coverage(p, n):
    rng = np.random.default_rng(1)
    covered = [lo <= p <= hi for lo, hi in (Rate(int(k), n).ci for k in rng.binomial(n, p, EXPERIMENTS))]
    assert 0.92 <= np.mean(covered) <= 0.98


@pytest.mark.parametrize("shift", [0.0, 0.8])
def test_membership_bootstrap_coverage(shift):
    rng = np.random.default_rng(2)
    true_auc = norm.cdf(shift / np.sqrt(2.0))  # P(member score > non-member score) for unit normals
    covered = []
    for seed in range(EXPERIMENTS):
        members = rng.normal(-shift, 1.0, 60)  # members closer: smaller distances
        non_members = rng.normal(0.0, 1.0, 60)
        result = membership_signal(members, non_members, n_resamples=250, seed=seed)
        covered.append(result.ci[0] <= true_auc <= result.ci[1])
    assert 0.92 <= np.mean(covered) <= 0.98


def test_rank_auc_is_roc_auc_with_ties():
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 40).astype(float)
    expected = roc_auc_score(np.r_[np.ones(30), np.zeros(40)], np.r_[pos, neg])
    assert float(rank_auc(pos, neg)) == pytest.approx(expected)


def test_risk_is_anonymeters_residual():
    attack, control = Rate(30, 100), Rate(10, 100)
    risk = Risk.from_rates(attack, control)
    a, c = attack.centre, control.centre
    assert risk.value == pytest.approx((a - c) / (1 - c))
    assert risk.ci[0] > 0 and risk.ci[0] < risk.value < risk.ci[1]
    same = Risk.from_rates(Rate(10, 100), Rate(10, 100))
    assert same.value == 0.0 and same.ci[0] == 0.0 and same.ci[1] > 0.0
    worse = Risk.from_rates(Rate(2, 100), Rate(25, 100))
    assert worse.residual + worse.error < 0  # Anonymeter's upper bound would be 0
    assert worse.value == 0.0 and worse.ci == (0.0, pytest.approx(worse.error))


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_a_confidence_outside_the_unit_interval_names_the_setting(confidence):
    with pytest.raises(ConfigurationError, match=f"confidence={confidence!r}"):
        z_value(confidence)
