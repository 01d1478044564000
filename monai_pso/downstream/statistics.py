"""Statistics for comparing networks on one real test set: DeLong AUROC intervals and tests, paired tests.

- :func:`delong_auroc`: AUROC with its DeLong variance and 95% interval (fast DeLong, Sun & Xu 2014,
  "Fast implementation of DeLong's algorithm for comparing the areas under correlated ROC curves").
- :func:`delong_test`: the paired DeLong test for the difference of two correlated AUROCs measured on
  the same cases, with the interval of the difference.
- :func:`paired_tests`: per-image paired comparison of two score lists (PSNR, SSIM): mean difference
  with its t interval, paired t-test and Wilcoxon signed-rank p-values (scipy), and the one-sided
  p-value of "the candidate is worse".
- :func:`delong_mean_auroc` and :func:`delong_mean_test`: the macro mean of several one-vs-rest (or
  per-label) AUROCs on the same cases, and the paired difference of two models' means, with a DeLong
  variance: each AUROC's structural components are centred and scaled per case (DeLong's ``S10/m + S01/n``
  exactly for one class), and the per-case components of the classes are averaged, so that their
  covariances across classes (one case is a positive of one class and a negative of the others) count.
- :func:`bootstrap_mean_auroc`: the same macro mean with a case-resampling bootstrap interval (a slower
  cross-check of :func:`delong_mean_auroc`).
- :func:`noninferiority_test`: the one-sided test of ``difference <= -margin`` (normal for a DeLong
  difference, t for a paired t difference); :func:`add_noninferiority` adds it, the PSO paper's "within
  one percentage point" and the seeds' "p > 0.05" readings to a study comparison; :func:`across_seeds`
  summarises the comparisons of several generator seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

#: Non-inferiority margins of the study's metrics (candidate minus reference, higher is better):
#: 0.05 AUROC (5 percentage points), 0.5 dB PSNR, 0.01 SSIM.
NONINFERIORITY_MARGINS = {"auroc": 0.05, "psnr": 0.5, "ssim": 0.01}

#: The PSO paper's "within one percentage point of real", read from the point estimate: ``difference >= -WITHIN_1PP``.
WITHIN_1PP = 0.01


def _normal_quantile(confidence: float) -> float:
    """The two-sided critical value of a standard normal at level ``confidence`` (1.96 for 0.95)."""
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


@dataclass(frozen=True)
class AurocEstimate:
    """An AUROC with its DeLong standard error and 95% interval."""

    auroc: float
    se: float
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class AurocDifference:
    """``auroc_a - auroc_b`` on the same cases, with DeLong's paired standard error, interval and p-value."""

    auroc_a: float
    auroc_b: float
    difference: float
    se: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _check_binary(labels: np.ndarray, scores: np.ndarray) -> None:
    if labels.ndim != 1 or scores.shape[-1] != labels.shape[0]:
        raise ValueError(f"labels must be 1D and match the scores' last axis, got {labels.shape} and {scores.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if labels.sum() == 0 or labels.sum() == labels.size:
        raise ValueError("AUROC needs at least one positive and one negative case")


def _components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``k`` score vectors and their per-case DeLong components ``(k, n)``.

    A positive's component is ``(V10 - AUROC) / sqrt(m (m - 1))``, a negative's ``(V01 - AUROC) / sqrt(n (n - 1))``
    (``V10``: the fraction of negatives it outscores, ties half; ``V01``: the fraction of positives outscoring
    it), so that ``components @ components.T`` is DeLong's covariance ``S10 / m + S01 / n``.
    """
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    _check_binary(labels, scores)
    is_positive = labels == 1
    positive, negative = scores[:, is_positive], scores[:, ~is_positive]
    m, n = positive.shape[1], negative.shape[1]
    rank_pos = stats.rankdata(positive, axis=1)  # midranks within positives
    rank_neg = stats.rankdata(negative, axis=1)
    rank_all = stats.rankdata(np.concatenate([positive, negative], axis=1), axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n  # structural components of the positives
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m  # of the negatives
    aurocs = v10.mean(axis=1)  # = the Mann-Whitney AUROC; exactly 1.0 when every positive outscores every negative
    components = np.empty_like(scores)
    components[:, is_positive] = (v10 - aurocs[:, None]) / np.sqrt(m * (m - 1)) if m > 1 else 0.0
    components[:, ~is_positive] = (v01 - aurocs[:, None]) / np.sqrt(n * (n - 1)) if n > 1 else 0.0
    return aurocs, components


def delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``k`` score vectors on the same cases and their DeLong covariance (fast DeLong).

    Parameters
    ----------
    labels
        ``(n,)`` of 0/1.
    scores
        ``(n,)`` or ``(k, n)``: higher means more likely positive.

    Returns
    -------
    aurocs, covariance
        ``(k,)`` and ``(k, k)``.

    Examples
    --------
    >>> auc, cov = delong_covariance(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> float(auc[0])
    0.75
    """
    aurocs, components = _components(labels, scores)
    return aurocs, components @ components.T


def _difference(auroc_a: float, auroc_b: float, variance: float, confidence: float) -> AurocDifference:
    difference = float(auroc_a - auroc_b)
    se = float(np.sqrt(max(variance, 0.0)))
    z_crit = _normal_quantile(confidence)
    if se == 0.0:
        z, p = (0.0, 1.0) if difference == 0.0 else (float(np.sign(difference) * np.inf), 0.0)
    else:
        z = difference / se
        p = float(2.0 * stats.norm.sf(abs(z)))
    return AurocDifference(float(auroc_a), float(auroc_b), difference, se, difference - z_crit * se, difference + z_crit * se, float(z), p)


def delong_auroc(labels: np.ndarray, scores: np.ndarray, confidence: float = 0.95) -> AurocEstimate:
    """AUROC with DeLong's standard error and a normal interval clipped to ``[0, 1]``.

    Examples
    --------
    >>> est = delong_auroc(np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9]))
    >>> round(est.auroc, 3), est.ci_low < est.auroc < est.ci_high
    (0.889, True)
    """
    labels = np.asarray(labels).astype(int).ravel()
    aurocs, cov = delong_covariance(labels, scores)
    auroc, se = float(aurocs[0]), float(np.sqrt(max(cov[0, 0], 0.0)))
    z = _normal_quantile(confidence)
    return AurocEstimate(auroc, se, max(0.0, auroc - z * se), min(1.0, auroc + z * se), int(labels.sum()), int((labels == 0).sum()))


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, confidence: float = 0.95) -> AurocDifference:
    """Paired DeLong test of ``AUROC(a) - AUROC(b)`` for two score vectors on the same cases.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> d = delong_test(y, y + rng.normal(0, 1, 200), y + rng.normal(0, 3, 200))
    >>> d.difference > 0, d.ci_low < d.difference < d.ci_high
    (True, True)
    """
    aurocs, cov = delong_covariance(labels, np.stack([np.asarray(scores_a, float), np.asarray(scores_b, float)]))
    return _difference(aurocs[0], aurocs[1], cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1], confidence)


def defined_classes(indicators: np.ndarray) -> list[int]:
    """Columns with at least one positive and one negative case (the others have no AUROC)."""
    return [k for k in range(indicators.shape[1]) if 0 < indicators[:, k].sum() < len(indicators)]


def _mean_components(indicators: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Macro-mean AUROC of each ``(n, K)`` score matrix over the defined classes, and its per-case components ``(len(scores), n)``."""
    y = np.asarray(indicators).astype(int)
    if y.ndim != 2 or any(np.shape(s) != y.shape for s in scores):
        raise ValueError(f"indicators and scores must be (n, K) matrices of one shape, got {y.shape} and {[np.shape(s) for s in scores]}")
    classes = defined_classes(y)
    if not classes:
        raise ValueError("AUROC needs at least one class with a positive and a negative case")
    aurocs, components = zip(*(_components(y[:, k], np.stack([np.asarray(s, np.float64)[:, k] for s in scores])) for k in classes))
    return np.mean(aurocs, axis=0), np.mean(components, axis=0), classes


def delong_mean_auroc(indicators: np.ndarray, scores: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Macro-mean one-vs-rest AUROC over the classes (columns) with a DeLong standard error and interval.

    The per-case DeLong components of the classes are averaged before squaring, so that the
    covariances between the classes' AUROCs (on the same cases) enter the variance of the mean. For
    one class this is :func:`delong_auroc`. Classes without both a positive and a negative case are
    left out (listed in ``classes``: those used).

    Parameters
    ----------
    indicators
        ``(n, K)`` 0/1 matrix (one-hot for multi-class, multi-hot for multi-label).
    scores
        ``(n, K)`` class scores (probabilities).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.eye(3)[rng.integers(0, 3, 90)]
    >>> out = delong_mean_auroc(y, y + rng.normal(0, 1, y.shape))
    >>> out["ci_low"] < out["mean_auroc"] < out["ci_high"], out["classes"]
    (True, [0, 1, 2])
    """
    aurocs, components, classes = _mean_components(indicators, scores)
    mean, se = float(aurocs[0]), float(np.sqrt(np.sum(components[0] ** 2)))
    z = _normal_quantile(confidence)
    return {"mean_auroc": mean, "se": se, "ci_low": max(0.0, mean - z * se), "ci_high": min(1.0, mean + z * se), "classes": classes}


def delong_mean_test(indicators: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, confidence: float = 0.95) -> AurocDifference:
    """Paired DeLong test of the difference of two models' macro-mean AUROCs on the same cases.

    ``auroc_a`` and ``auroc_b`` of the result are the two means (over the classes defined in
    ``indicators``). For one class this is :func:`delong_test`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.eye(3)[rng.integers(0, 3, 300)]
    >>> d = delong_mean_test(y, y + rng.normal(0, 1, y.shape), y + rng.normal(0, 3, y.shape))
    >>> d.difference > 0, d.ci_low < d.difference < d.ci_high, d.p_value < 0.05
    (True, True, True)
    """
    aurocs, components, _ = _mean_components(indicators, scores_a, scores_b)
    return _difference(aurocs[0], aurocs[1], float(np.sum((components[0] - components[1]) ** 2)), confidence)


def bootstrap_mean_auroc(
    labels: np.ndarray, scores: np.ndarray, scores_ref: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Macro-mean one-vs-rest AUROC over classes with a case-resampling percentile interval.

    Parameters
    ----------
    labels
        ``(n, K)`` 0/1 indicator matrix (one-hot for multi-class, multi-hot for multi-label).
    scores
        ``(n, K)`` class scores.
    scores_ref
        Optional ``(n, K)`` scores of a reference model on the same cases: then the mean difference
        ``mean(scores) - mean(scores_ref)`` is bootstrapped too (paired: the same resampled cases).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.eye(3)[rng.integers(0, 3, 90)]
    >>> out = bootstrap_mean_auroc(y, y + rng.normal(0, 1, y.shape), n_boot=50)
    >>> out["ci_low"] <= out["mean_auroc"] <= out["ci_high"]
    True
    """
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)

    def mean_auc(index: np.ndarray, values: np.ndarray) -> float:
        y = labels[index]
        keep = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
        return float(np.mean([roc_auc_score(y[:, k], values[index, k]) for k in keep])) if keep else np.nan

    rng = np.random.default_rng(seed)
    everything = np.arange(len(labels))
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(n_boot)]
    alpha = (1.0 - confidence) / 2.0
    point = mean_auc(everything, scores)
    boot = np.array([mean_auc(d, scores) for d in draws])
    out = {"mean_auroc": point, "ci_low": float(np.nanquantile(boot, alpha)), "ci_high": float(np.nanquantile(boot, 1 - alpha)), "n_boot": n_boot}
    if scores_ref is not None:
        scores_ref = np.asarray(scores_ref, dtype=np.float64)
        diff = boot - np.array([mean_auc(d, scores_ref) for d in draws])
        out.update(
            difference=point - mean_auc(everything, scores_ref),
            difference_ci_low=float(np.nanquantile(diff, alpha)),
            difference_ci_high=float(np.nanquantile(diff, 1 - alpha)),
            difference_p_value=float(min(1.0, 2.0 * min(np.nanmean(diff <= 0), np.nanmean(diff >= 0)))),
        )
    return out


def paired_tests(candidate: np.ndarray, reference: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Paired comparison of per-image scores (higher is better), ``candidate - reference``.

    Returns the means, the mean difference with its standard error ``se`` and t interval, the two-sided paired t-test and
    Wilcoxon signed-rank p-values, and ``p_worse_t`` / ``p_worse_wilcoxon``: one-sided p-values of the
    alternative "the candidate is worse" (a value > 0.05 means not significantly worse).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(30, 2, 40)
    >>> out = paired_tests(ref - 1 + rng.normal(0, 0.1, 40), ref)
    >>> out["p_t"] < 0.05, round(out["mean_difference"])
    (True, -1)
    """
    a, b = np.asarray(candidate, dtype=np.float64).ravel(), np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired tests need two equally long score lists of >= 2 values, got {a.size} and {b.size}")
    diff = a - b
    n = diff.size
    se = float(diff.std(ddof=1) / np.sqrt(n))
    t_crit = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    all_zero = bool(np.all(diff == 0))
    p_t = 1.0 if se == 0.0 else float(stats.ttest_rel(a, b).pvalue)
    p_worse_t = (1.0 if diff.mean() >= 0 else 0.0) if se == 0.0 else float(stats.ttest_rel(a, b, alternative="less").pvalue)
    p_w = 1.0 if all_zero else float(stats.wilcoxon(a, b).pvalue)
    p_worse_w = 1.0 if all_zero else float(stats.wilcoxon(a, b, alternative="less").pvalue)
    return {
        "n": n,
        "mean_candidate": float(a.mean()),
        "mean_reference": float(b.mean()),
        "mean_difference": float(diff.mean()),
        "se": se,
        "ci_low": float(diff.mean() - t_crit * se),
        "ci_high": float(diff.mean() + t_crit * se),
        "p_t": p_t,
        "p_wilcoxon": p_w,
        "p_worse_t": p_worse_t,
        "p_worse_wilcoxon": p_worse_w,
    }


def noninferiority_test(difference: float, se: float, margin: float, df: int | None = None, alpha: float = 0.05) -> dict[str, Any]:
    """One-sided non-inferiority test of a difference (candidate minus reference, higher is better).

    H0: ``difference <= -margin`` (the candidate is worse by the margin or more); H1: ``difference > -margin``.
    The statistic ``(difference + margin) / se`` is referred to a standard normal when ``df`` is ``None``
    (a DeLong AUROC difference) or to Student's t with ``df`` degrees of freedom (the paired t-test of
    per-image differences, ``df = n - 1``). ``noninferior`` is ``p_noninferior < alpha``, which is the same
    as ``lower_bound > -margin``: ``lower_bound`` is the lower end of the one-sided ``1 - alpha`` interval,
    the lower end of the two-sided ``1 - 2 alpha`` interval (90% for alpha 0.05).

    Parameters
    ----------
    difference, se
        The estimated difference and its standard error.
    margin
        The largest loss still called non-inferior (>= 0), in the metric's units.
    df
        Degrees of freedom of a t statistic; ``None`` for a normal one.
    alpha
        The one-sided level.

    Examples
    --------
    >>> out = noninferiority_test(-0.01, 0.02, margin=0.05)
    >>> round(out["p_noninferior"], 4), round(out["lower_bound"], 4), out["noninferior"]
    (0.0228, -0.0429, True)
    >>> noninferiority_test(-0.01, 0.02, margin=0.05, df=5)["noninferior"]
    False
    """
    if margin < 0 or not 0 < alpha < 1:
        raise ValueError(f"margin must be >= 0 and alpha in (0, 1), got margin={margin} and alpha={alpha}")
    distribution = stats.norm() if df is None else stats.t(df)
    if se > 0:
        p = float(distribution.sf((difference + margin) / se))
    else:  # no spread: the difference itself decides
        p = 0.0 if difference > -margin else 1.0
    lower = float(difference - distribution.ppf(1.0 - alpha) * se)
    return {"margin": float(margin), "alpha": float(alpha), "p_noninferior": p, "lower_bound": lower, "noninferior": bool(p < alpha)}


def compared_metrics(comparison: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    """The metrics a study comparison compares: ``{metric: (key of its entry, difference)}``.

    ``auroc`` is the DeLong ``auroc_difference`` entry (:func:`delong_test` or :func:`delong_mean_test`);
    every entry of :func:`paired_tests` (``psnr``, ``ssim``, ...) is its own metric.

    Examples
    --------
    >>> compared_metrics({"auroc_difference": {"difference": -0.02, "se": 0.01}, "method": "paired DeLong test"})
    {'auroc': ('auroc_difference', -0.02)}
    """
    found = {"auroc": ("auroc_difference", float(comparison["auroc_difference"]["difference"]))} if "auroc_difference" in comparison else {}
    return found | {name: (name, float(entry["mean_difference"])) for name, entry in comparison.items() if isinstance(entry, Mapping) and "mean_difference" in entry}


def add_noninferiority(comparison: Mapping[str, Any], margins: Mapping[str, float] = NONINFERIORITY_MARGINS, alpha: float = 0.05) -> dict[str, Any]:
    """A copy of a study comparison whose compared metrics carry non-inferiority fields.

    Each metric with a margin in ``margins`` gets :func:`noninferiority_test`'s ``margin``, ``alpha``,
    ``p_noninferior``, ``lower_bound`` and ``noninferior``: for AUROC from the paired DeLong difference and
    its SE (normal); for a paired per-image metric from the mean difference and its SE (one-sided paired
    t-test, ``n - 1`` degrees of freedom). The seeds' own readings are added beside them:

    - AUROC, ``within_1pp``: the PSO paper's "within one percentage point of real", read from the point
      estimate alone as ``difference >= -0.01`` (a better candidate counts as within);
    - paired metrics, ``p_difference`` (the two-sided paired t-test p-value) and ``not_significantly_worse``
      (``False`` only when ``p_difference <= alpha`` and the candidate's mean is lower): the "p > 0.05"
      reading. Neither is evidence of equivalence; ``noninferior`` is the test of it.

    Examples
    --------
    >>> c = {"auroc_difference": {"difference": -0.008, "se": 0.02}, "method": "paired DeLong test"}
    >>> d = add_noninferiority(c)["auroc_difference"]
    >>> d["margin"], d["noninferior"], d["within_1pp"]
    (0.05, True, True)
    """
    out = dict(comparison)
    for metric, (key, difference) in compared_metrics(comparison).items():
        if metric not in margins:
            continue
        entry = comparison[key]
        if metric == "auroc":
            out[key] = dict(entry) | noninferiority_test(difference, entry["se"], margins[metric], alpha=alpha) | {"within_1pp": bool(difference >= -WITHIN_1PP)}
            continue
        worse = entry["p_t"] <= alpha and difference < 0
        test = noninferiority_test(difference, entry["se"], margins[metric], df=int(entry["n"]) - 1, alpha=alpha)
        out[key] = dict(entry) | test | {"p_difference": float(entry["p_t"]), "not_significantly_worse": not worse}
    return out


def across_seeds(comparisons: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Spread over generator seeds of each compared metric's difference: one comparison per seed.

    Per metric: ``n_seeds``, the ``differences`` in seed order, their ``mean``, ``sd`` (ddof 1; ``None`` for
    one seed), ``min`` and ``max``, and the share of seeds that are ``noninferior`` (when
    :func:`add_noninferiority` added it), ``within_1pp`` (AUROC) or ``not_significantly_worse`` (paired metrics).

    Examples
    --------
    >>> runs = [{"auroc_difference": {"difference": d, "noninferior": d > -0.02}} for d in (-0.03, 0.01)]
    >>> out = across_seeds(runs)["auroc"]
    >>> out["n_seeds"], round(out["mean"], 3), out["min"], out["share_noninferior"]
    (2, -0.01, -0.03, 0.5)
    """
    if not comparisons:
        raise ValueError("across_seeds needs at least one comparison")
    summary = {}
    for metric, (key, _) in compared_metrics(comparisons[0]).items():
        entries = [comparison[key] for comparison in comparisons]
        differences = [compared_metrics(comparison)[metric][1] for comparison in comparisons]
        values = np.asarray(differences)
        row: dict[str, Any] = {
            "n_seeds": len(values),
            "differences": differences,
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
            "min": float(values.min()),
            "max": float(values.max()),
        }
        for flag in ("noninferior", "within_1pp", "not_significantly_worse"):
            if all(flag in entry for entry in entries):
                row[f"share_{flag}"] = float(np.mean([bool(entry[flag]) for entry in entries]))
        summary[metric] = row
    return summary
