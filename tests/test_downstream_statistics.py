"""DeLong AUROC intervals and tests against the O(mn) definition, sklearn and a bootstrap; paired tests."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monai_pso.downstream.statistics import bootstrap_mean_auroc, delong_auroc, delong_covariance, delong_test, paired_tests


def _delong_by_definition(y, scores):
    """DeLong et al. 1988 written out pairwise: psi(x, y) = 1, 1/2, 0; variance S10/m + S01/n."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return psi.mean(axis=(1, 2)), np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def _simulate(rng, n, separations):
    y = rng.integers(0, 2, n)
    common = rng.normal(0, 1, n)  # correlates the two models, as on one test set
    return y, np.stack([s * y + 0.6 * common + rng.normal(0, 1, n) for s in separations])


def test_fast_delong_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    y, scores = _simulate(rng, 60, (1.0, 0.5))
    scores = np.round(scores, 1)  # ties between and within classes
    auc, cov = delong_covariance(y, scores)
    auc_ref, cov_ref = _delong_by_definition(y, scores)
    np.testing.assert_allclose(auc, auc_ref, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, atol=1e-12)
    assert auc[0] == pytest.approx(roc_auc_score(y, scores[0]))


def test_known_small_case():
    # positives 0.35, 0.8; negatives 0.1, 0.4: psi = [[1, 0], [1, 1]] -> AUC 0.75
    # V10 = (0.5, 1.0) var 0.125; V01 = (1.0, 0.5) var 0.125; variance = 0.125/2 + 0.125/2 = 0.125
    est = delong_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert est.auroc == pytest.approx(0.75)
    assert est.se == pytest.approx(np.sqrt(0.125))
    assert (est.ci_low, est.ci_high) == (pytest.approx(max(0, 0.75 - 1.959964 * np.sqrt(0.125))), 1.0)


def test_delong_se_agrees_with_bootstrap():
    rng = np.random.default_rng(2)
    y, scores = _simulate(rng, 300, (1.2, 0.8))
    est = delong_auroc(y, scores[0])
    diff = delong_test(y, scores[0], scores[1])
    boot_auc, boot_diff = [], []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        a, b = roc_auc_score(y[i], scores[0, i]), roc_auc_score(y[i], scores[1, i])
        boot_auc.append(a)
        boot_diff.append(a - b)
    assert est.se == pytest.approx(np.std(boot_auc), rel=0.2)
    assert diff.se == pytest.approx(np.std(boot_diff), rel=0.2)
    assert diff.difference == pytest.approx(roc_auc_score(y, scores[0]) - roc_auc_score(y, scores[1]))


def test_delong_test_size_and_power():
    rng = np.random.default_rng(3)
    p_equal = [delong_test(*(lambda y, s: (y, s[0], s[1]))(*_simulate(rng, 150, (1.0, 1.0)))).p_value for _ in range(200)]
    assert 0.01 < np.mean(np.array(p_equal) < 0.05) < 0.11  # nominal 5% under the null
    y, s = _simulate(rng, 400, (2.0, 0.5))
    assert delong_test(y, s[0], s[1]).p_value < 1e-6
    same = delong_test(y, s[0], s[0])
    assert (same.difference, same.p_value) == (0.0, 1.0)


def test_delong_rejects_one_class():
    with pytest.raises(ValueError):
        delong_auroc(np.ones(5), np.arange(5.0))


def test_bootstrap_mean_auroc_paired_difference():
    rng = np.random.default_rng(4)
    y = np.eye(3)[rng.integers(0, 3, 120)]
    good, bad = y + rng.normal(0, 0.7, y.shape), y + rng.normal(0, 3, y.shape)
    out = bootstrap_mean_auroc(y, good, bad, n_boot=200)
    assert out["ci_low"] <= out["mean_auroc"] <= out["ci_high"]
    assert out["difference"] > 0 and out["difference_ci_low"] > 0 and out["difference_p_value"] < 0.05


def test_paired_tests():
    rng = np.random.default_rng(5)
    ref = rng.normal(30, 3, 50)
    worse = paired_tests(ref - 0.5 + rng.normal(0, 0.3, 50), ref)
    assert worse["p_t"] < 0.05 and worse["p_wilcoxon"] < 0.05 and worse["p_worse_t"] < 0.05 and worse["ci_high"] < 0
    better = paired_tests(ref + 0.5 + rng.normal(0, 0.3, 50), ref)
    assert better["p_worse_t"] > 0.5 and better["p_worse_wilcoxon"] > 0.5
    same = paired_tests(ref, ref)
    assert same["p_t"] == same["p_wilcoxon"] == 1.0
