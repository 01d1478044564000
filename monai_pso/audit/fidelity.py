"""Fidelity, diversity and authenticity of a release, beside a real-data baseline, in the fidelity embedding.

The privacy tests ask whether released images are too close to training images; these figures ask
whether they look like real images at all and how much of the real data they cover. All are
computed in the ``fidelity`` embedding (:class:`monai_pso.embed.fidelity.FidelityEmbedder`: pooled
statistics of a fixed random-weight network, not the guard's pixel embedding).

k-nearest-neighbour manifolds (Naeem et al., ICML 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models"; the formulas of their ``prdc`` package, ``nearest_k`` = 5 as they recommend). Each
real reference image ``i`` has the radius ``r_i`` of its ``k``-th nearest other reference image, each
synthetic image ``j`` the radius ``s_j`` among synthetic images:

- **precision**: share of synthetic images inside some real ball (``d(i, j) < r_i``): do they look real?
- **recall**: share of real images inside some synthetic ball (``d(i, j) < s_j``): is the real variety produced?
- **density**: mean number of real balls holding a synthetic image, divided by ``k`` (about 1 for real data);
- **coverage**: share of real images whose ball holds a synthetic image: diversity that outliers cannot inflate.

**authenticity** (Alaa et al., ICML 2022, "How Faithful is your Synthetic Data?"): a synthetic image is
*not* authentic when it lies closer to its nearest training image ``t`` than ``t``'s own nearest other
training image does (a copy or near-copy); authenticity is the share that are. It is measured against
the training images, the others against held-out real images.

**FID** (Heusel et al. 2017) and **KID** (Binkowski et al. 2018, unbiased MMD^2 with the cubic
polynomial kernel ``(x.y / D + 1)^3``) between the synthetic and the reference features, in the
same fidelity feature space (named in the report). They are computed here from the features with
numpy/scipy, not with torchmetrics: the audit already holds the features (torchmetrics' metrics take
images through a feature module and would run the network again), and no new dependency is needed.
FID is biased upwards at small sample sizes and has no interval here; read it against the baseline row
at similar sizes.

Intervals: percentile bootstrap (``n_resamples`` resamples with replacement) over the images each figure
averages over, the balls' radii fixed. Precision, density, authenticity and KID average over synthetic
images and resample them; recall and coverage are shares of *real* images and resample those (resampling
the release would drop about a third of it from each resample and bias them downwards). The
**real-data baseline** runs the same computation with held-out real images in place of the release and a
random subsample of the training images, as many as the held-out set, as the reference: what real images
score. Recall and coverage grow with the number of synthetic images, so a small release covers little.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> real, fake, train = rng.normal(size=(60, 4)), rng.normal(size=(40, 4)), rng.normal(size=(80, 4))
>>> scores = manifold_scores(fake, real, train, n_resamples=50)
>>> 0.5 < scores.precision.value <= 1.0 and scores.precision.ci[0] <= scores.precision.value <= scores.precision.ci[1]
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from monai_pso.audit.intervals import percentile_interval
from monai_pso.errors import DataSourceError

#: ``k`` of the k-nearest-neighbour balls (Naeem et al. 2020 recommend 5).
DEFAULT_NEAREST_K = 5
#: Rows of a distance chunk when searching nearest neighbours within one large set.
CHUNK_ROWS = 1024
#: KID uses at most this many images of each side (a seeded random subset), as torchmetrics' ``subset_size``:
#: its kernel matrices grow with the square of the set sizes.
KID_SUBSET = 1000
#: The headline figures, each with an interval.
SCORES = ("precision", "recall", "density", "coverage", "authenticity")


@dataclass(frozen=True)
class Estimate:
    """A figure and its bootstrap interval.

    Examples
    --------
    >>> Estimate(0.5, (0.4, 0.6)).to_dict()
    {'value': 0.5, 'ci': [0.4, 0.6]}
    """

    value: float
    ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci": list(self.ci)}


@dataclass
class FidelityScores:
    """Precision, recall, density, coverage, authenticity, FID and KID of one synthetic set against one reference.

    ``nearest_reference`` holds, per synthetic image, its distance to the nearest reference image
    (for the report's histogram); ``reference_radius`` the median k-NN radius of the reference.
    """

    precision: Estimate
    recall: Estimate
    density: Estimate
    coverage: Estimate
    authenticity: Estimate
    fid: float
    kid: Estimate
    synthetic_images: int
    reference_images: int
    training_images: int
    nearest_k: int
    nearest_reference: np.ndarray
    reference_radius: float

    def to_dict(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for name in (*SCORES, "kid"):
            estimate = getattr(self, name)
            flat[name], flat[f"{name}_ci"] = estimate.value, list(estimate.ci)
        flat["fid"] = self.fid
        flat.update(
            synthetic_images=self.synthetic_images,
            reference_images=self.reference_images,
            training_images=self.training_images,
            nearest_k=self.nearest_k,
            reference_radius_median=self.reference_radius,
        )
        return flat


@dataclass
class FidelityResult:
    """The release's scores (against held-out real images) and the real-data baseline's (held-out against training)."""

    release: FidelityScores
    baseline: FidelityScores
    feature_space: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"feature_space": dict(self.feature_space), "release": self.release.to_dict(), "real_baseline": self.baseline.to_dict()}


def nearest_within(features: np.ndarray, k: int) -> np.ndarray:
    """Per row, the distance to its ``k``-th nearest *other* row (rows compared in chunks).

    Examples
    --------
    >>> nearest_within(np.array([[0.0], [1.0], [3.0]]), 1).tolist()
    [1.0, 1.0, 2.0]
    """
    if not 1 <= k < len(features):
        raise DataSourceError("fidelity features", f"{len(features)} images: the k-NN radius needs more than k={k}")
    radii = []
    for start in range(0, len(features), CHUNK_ROWS):
        block = cdist(features[start : start + CHUNK_ROWS], features)
        radii.append(np.partition(block, k, axis=1)[:, k])  # column 0 of the partition is the row itself (0)
    return np.concatenate(radii)


def authentic(synthetic: np.ndarray, training: np.ndarray) -> np.ndarray:
    """Per synthetic row: farther from its nearest training row ``t`` than ``t`` is from its nearest other training row.

    Examples
    --------
    >>> train = np.array([[0.0], [1.0], [5.0]])
    >>> authentic(np.array([[0.1], [3.0]]), train).tolist()
    [False, True]
    """
    gap = nearest_within(training, 1)
    flags = []
    for start in range(0, len(synthetic), CHUNK_ROWS):
        block = cdist(synthetic[start : start + CHUNK_ROWS], training)
        nearest = block.argmin(axis=1)
        flags.append(block[np.arange(len(nearest)), nearest] > gap[nearest])
    return np.concatenate(flags)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID formula: ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` over two feature sets.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(500, 3))
    >>> frechet_distance(x, x) < 1e-6, round(frechet_distance(x, x + 2.0), 3)
    (True, 12.0)
    """
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T
    # tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), symmetric and PSD: stable when n < D
    trace_root = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0.0)).sum()
    return float(max(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root, 0.0))


def _kid_replicates(synthetic: np.ndarray, reference: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unbiased MMD^2 (cubic polynomial kernel) for each row of ``counts`` (how often each synthetic row is drawn).

    Within the synthetic set only pairs of *different* synthetic images count, so a resample's
    duplicates add no self-similarity. Sets larger than :data:`KID_SUBSET` are subsampled first.
    """
    if len(synthetic) > KID_SUBSET:
        keep = np.sort(rng.permutation(len(synthetic))[:KID_SUBSET])
        synthetic, counts = synthetic[keep], counts[:, keep]
    if len(reference) > KID_SUBSET:
        reference = reference[np.sort(rng.permutation(len(reference))[:KID_SUBSET])]
    dim = synthetic.shape[1]
    kernel = lambda x, y: (x @ y.T / dim + 1.0) ** 3  # noqa: E731
    k_ss, k_sr, k_rr = kernel(synthetic, synthetic), kernel(synthetic, reference), kernel(reference, reference)
    m = len(reference)
    reference_term = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
    pairs = (counts @ k_ss * counts).sum(axis=1) - counts**2 @ np.diag(k_ss)
    pair_count = counts.sum(axis=1) ** 2 - (counts**2).sum(axis=1)
    cross = counts @ k_sr.mean(axis=1) / counts.sum(axis=1)
    return pairs / np.maximum(pair_count, 1.0) + reference_term - 2.0 * cross


def _draw_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n)``: how often each of ``n`` items is drawn in each bootstrap resample."""
    draws = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.repeat(np.arange(n_resamples), n), draws.ravel()), 1.0)
    return counts


def manifold_scores(
    synthetic: np.ndarray,
    reference: np.ndarray,
    training: np.ndarray,
    nearest_k: int = DEFAULT_NEAREST_K,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> FidelityScores:
    """Every fidelity figure of ``synthetic`` against ``reference`` (authenticity against ``training``).

    Parameters
    ----------
    synthetic, reference, training
        Feature rows ``(N, D)`` of the synthetic images, the real reference images (held out) and the
        training images.
    nearest_k
        ``k`` of the balls; the synthetic balls use ``min(k, N_synthetic - 1)``.
    confidence, n_resamples, seed
        The bootstrap over synthetic images.

    Raises
    ------
    DataSourceError
        Fewer than two synthetic images, or a reference with no more than ``nearest_k`` images.
    """
    synthetic, reference, training = (np.asarray(a, np.float64) for a in (synthetic, reference, training))
    if len(synthetic) < 2:
        raise DataSourceError("release", "fidelity scores need at least two synthetic images")
    radii = nearest_within(reference, nearest_k)
    own_radii = nearest_within(synthetic, min(nearest_k, len(synthetic) - 1))
    distances = cdist(synthetic, reference)  # (n, m)
    in_real_ball = distances < radii[None, :]
    in_own_ball = distances < own_radii[:, None]
    inside = in_real_ball.sum(axis=1).astype(np.float64)
    genuine = authentic(synthetic, training).astype(np.float64)

    rng = np.random.default_rng(seed)
    counts = np.vstack([np.ones(len(synthetic)), _draw_counts(len(synthetic), n_resamples, rng)])  # row 0: the sample itself
    real_counts = np.vstack([np.ones(len(reference)), _draw_counts(len(reference), n_resamples, rng)])
    mean_over = lambda weights, flags: weights @ flags / weights.sum(axis=1)  # noqa: E731
    replicates = {
        "precision": mean_over(counts, (inside > 0).astype(np.float64)),
        "density": mean_over(counts, inside) / nearest_k,
        "coverage": mean_over(real_counts, in_real_ball.any(axis=0).astype(np.float64)),
        "recall": mean_over(real_counts, in_own_ball.any(axis=0).astype(np.float64)),
        "authenticity": mean_over(counts, genuine),
        "kid": _kid_replicates(synthetic, reference, counts, rng),
    }
    estimates = {name: Estimate(float(values[0]), percentile_interval(values[1:], confidence)) for name, values in replicates.items()}
    return FidelityScores(
        **estimates,
        fid=frechet_distance(synthetic, reference),
        synthetic_images=len(synthetic),
        reference_images=len(reference),
        training_images=len(training),
        nearest_k=nearest_k,
        nearest_reference=distances.min(axis=1),
        reference_radius=float(np.median(radii)),
    )


def fidelity_audit(
    release: np.ndarray,
    holdout: np.ndarray,
    training: np.ndarray,
    feature_space: dict[str, Any],
    nearest_k: int = DEFAULT_NEAREST_K,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> FidelityResult:
    """The release against held-out real images, and the real baseline: held-out images against training.

    The baseline's reference is a random subsample (``seed``) of the training features with as many rows
    as ``holdout``, so both rows measure against a reference of the same size.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> result = fidelity_audit(rng.normal(size=(30, 3)), rng.normal(size=(40, 3)), rng.normal(size=(90, 3)), {"name": "toy"}, n_resamples=20)
    >>> sorted(result.to_dict())
    ['feature_space', 'real_baseline', 'release']
    """
    holdout, training = np.asarray(holdout, np.float64), np.asarray(training, np.float64)
    release_scores = manifold_scores(release, holdout, training, nearest_k, confidence, n_resamples, seed)
    rng = np.random.default_rng(seed)
    baseline_reference = training[np.sort(rng.permutation(len(training))[: len(holdout)])]
    baseline = manifold_scores(holdout, baseline_reference, training, nearest_k, confidence, n_resamples, seed)
    return FidelityResult(release_scores, baseline, dict(feature_space))
