"""The DCR test sees copies of any training image, whatever the training-to-holdout ratio, and stays calibrated.

Released images' distances to the FULL training set are compared with holdout images' own distances to
it (one-sided Mann-Whitney U). Cases, each with 100 released and 100 holdout images, drawn at random
from one pool of patients (training, holdout, unseen and control patients disjoint):

- 100 exact copies of random training images: p < 1e-6;
- 100 copies re-noised with a standard deviation drawn per image from NOISE: p < 1e-6;
- 100 real images of unseen patients: p > 0.05 (a single draw: by design this fails in 5% of draws;
  the simulations below measure that rate instead of assuming it);

with 100, 1,000 and 10,000 training images. Data: the embedded phantom (one image per patient, 16 px,
pixel embedder on a 12-pixel grid; 10,000 training patients in a few seconds), and the PneumoniaMNIST
subset (100 and 1,000: it holds 3,166 images) when ``../shared/data`` is present. ``benchmarks/dcr.py``
repeats every case over 50 random cohorts.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, mannwhitneyu, norm

from monai_pso.audit import AuditCohorts, AuditSettings, run_audit
from monai_pso.audit.dcr import Proportion, dcr_holdout_test, dcr_test, one_per_patient, population_shift
from monai_pso.audit.distances import EmbeddedImages, embed_records
from monai_pso.audit.embedders import default_audit_embedder
from monai_pso.data import ImageRecord, load_source
from monai_pso.embed.pixel import PixelEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dcr import near_copies  # noqa: E402 (the benchmark's re-noised copies, the same draws)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = (100, 1000, 10000)
HOLDOUT = RELEASED = CONTROL = 100
NOISE = (0.005, 0.03)  # near-copy noise std range, intensities in [0, 1]
EXPERIMENTS = 300
PHANTOM_EMBEDDER = PixelEmbedder(grid=12, smoothing=0.5)


# -- the statistics ----------------------------------------------------------------------------------


def test_p_value_is_scipys_one_sided_mann_whitney_and_the_auc_counts_ties_half():
    released = np.array([0.0, 0.0, 1.0, 2.0, 3.0])
    holdout = np.array([0.0, 1.0, 1.5, 2.5])
    result = dcr_holdout_test(released, holdout, n_resamples=100)
    assert result.p_value == pytest.approx(mannwhitneyu(released, holdout, alternative="less").pvalue)
    pairs = [(r < h) + 0.5 * (r == h) for r in released for h in holdout]
    assert result.auc == pytest.approx(np.mean(pairs))
    assert (result.released_at_zero, result.holdout_at_zero) == (2, 1)


def test_close_share_uses_the_holdouts_order_statistic_and_an_exact_interval():
    holdout = np.arange(1.0, 100.0)  # 99 values: k = floor(0.05 * 100) = 5, threshold 5.0
    result = dcr_holdout_test(np.array([0.0, 4.9, 5.0, 7.0]), holdout, n_resamples=100)
    assert result.threshold == 5.0 and result.null_share == pytest.approx(5 / 100)
    assert result.close.successes == 2 and result.close.trials == 4  # strictly closer than the threshold
    expected = binomtest(2, 4).proportion_ci(confidence_level=0.95, method="exact")
    assert result.close.ci == pytest.approx((expected.low, expected.high))


@pytest.mark.parametrize("successes, trials", [(0, 100), (3, 100), (100, 100), (31, 97)])
def test_proportion_is_clopper_pearson(successes, trials):
    expected = binomtest(successes, trials).proportion_ci(confidence_level=0.9, method="exact")
    assert Proportion(successes, trials, 0.9).ci == pytest.approx((expected.low, expected.high), abs=1e-12)


@pytest.mark.parametrize("p, n", [(0.05, 100), (0.3, 50)])
def test_clopper_pearson_coverage(p, n):
    rng = np.random.default_rng(5)
    covered = [lo <= p <= hi for lo, hi in (Proportion(int(k), n).ci for k in rng.binomial(n, p, EXPERIMENTS))]
    assert 0.93 <= np.mean(covered) <= 1.0  # exact: at least nominal, conservative at small counts


@pytest.mark.parametrize("ties", [False, True])
def test_false_positive_rate_under_the_null_is_the_nominal_level(ties):
    """Released and holdout DCRs from one distribution (with ties: rounded to 2 digits): p < 0.05 in ~5%."""
    rng = np.random.default_rng(6)
    draw = lambda: np.round(rng.gamma(4.0, 0.01, 100), 2 if ties else 12)  # noqa: E731
    rejected = [dcr_holdout_test(draw(), draw(), n_resamples=10).p_value < 0.05 for _ in range(EXPERIMENTS)]
    assert 0.02 <= np.mean(rejected) <= 0.09


def test_auc_bootstrap_interval_covers():
    rng = np.random.default_rng(7)
    shift = 0.5
    true_auc = norm.cdf(shift / np.sqrt(2.0))  # P(released < holdout) for unit normals, released shifted down
    covered = []
    for seed in range(EXPERIMENTS):
        result = dcr_holdout_test(rng.normal(-shift, 1.0, 80), rng.normal(0.0, 1.0, 80), n_resamples=250, seed=seed)
        covered.append(result.auc_ci[0] <= true_auc <= result.auc_ci[1])
    assert 0.92 <= np.mean(covered) <= 0.98


def test_one_image_per_patient_is_seeded_and_covers_every_patient():
    ids = ["a", "a", "a", "b", "c", "c"]
    picks = {tuple(one_per_patient(ids, seed)) for seed in range(30)}
    assert all(sorted({ids[i] for i in pick}) == ["a", "b", "c"] for pick in picks) and len(picks) > 1
    assert one_per_patient(ids, 3).tolist() == one_per_patient(ids, 3).tolist()


def test_population_shift_sees_a_release_farther_from_everyone():
    rng = np.random.default_rng(8)
    check = population_shift(rng.normal(1.0, 0.2, 100) + 0.5, rng.normal(1.0, 0.2, 100), control_images=100)
    assert check.p_value < 1e-6 and check.auc < 0.2


# -- planted copies and unseen images, in embeddings ---------------------------------------------------


def _exact_copies(records: list[ImageRecord]) -> list[ImageRecord]:
    return [replace(r, item_id=f"copy-{r.item_id}", patient_id="synthetic", split=None) for r in records]


def _cases(pool: EmbeddedImages, embedder, n_training: int, seed: int) -> dict[str, float]:
    """p-values of the three releases against one random cohort of ``n_training`` training images."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    training, holdout, unseen, control = (pool.subset(p) for p in np.split(order, np.cumsum([n_training, HOLDOUT, RELEASED, CONTROL]))[:4])
    assert not set(training.patients()) & (set(holdout.patients()) | set(unseen.patients()) | set(control.patients()))
    picked = [training.records[i] for i in rng.choice(n_training, RELEASED, replace=False)]
    releases = {
        "copies": embed_records(_exact_copies(picked), embedder, 512, "copies"),
        "near_copies": embed_records(near_copies(picked, NOISE, rng), embedder, 512, "near copies"),
        "unseen": unseen,
    }
    p_values = {}
    for name, release in releases.items():
        result, distances = dcr_test(release, training, holdout, control, n_resamples=200, seed=seed)
        assert len(distances.reference) == HOLDOUT and len(distances.released.distance) == RELEASED
        p_values[name] = result.p_value
        if name == "copies":
            assert result.released_at_zero == RELEASED and result.close.ci[0] > 0.9 and result.auc == 1.0
    return p_values


def _assert_cases(p_values: dict[str, float]) -> None:
    assert p_values["copies"] < 1e-6, p_values
    assert p_values["near_copies"] < 1e-6, p_values
    assert p_values["unseen"] > 0.05, p_values


@pytest.fixture(scope="module")
def phantom_pool():
    spec = f"phantom:2d?patients={max(SIZES) + HOLDOUT + RELEASED + CONTROL}&acquisitions=1&size=16"
    return embed_records(load_source(spec).records, PHANTOM_EMBEDDER, 512, "phantom")


@pytest.mark.parametrize("n_training", SIZES)
def test_phantom_copies_are_flagged_and_unseen_patients_are_not(phantom_pool, n_training):
    _assert_cases(_cases(phantom_pool, PHANTOM_EMBEDDER, n_training, seed=n_training))


@pytest.fixture(scope="module")
def pneumonia_pool(shared_data):
    records = load_source(str(shared_data / "medmnist" / "pneumoniamnist_balanced_subset.npz")).records
    return embed_records(records, default_audit_embedder(2), 512, "pneumoniamnist")


@pytest.mark.shared_data
@pytest.mark.parametrize("n_training", SIZES[:2])
def test_medmnist_copies_are_flagged_and_unseen_images_are_not(pneumonia_pool, n_training):
    _assert_cases(_cases(pneumonia_pool, default_audit_embedder(2), n_training, seed=n_training))


@pytest.mark.shared_data
def test_issue_12_a_release_of_training_copies_is_found_through_the_audit(shared_data):
    """Issue 12 measured share 0.43, p = 0.96 for 120 copies of 2,428 training images against 120 holdout images."""
    source = load_source(str(shared_data / "medmnist" / "pneumoniamnist_balanced_subset.npz"))
    training, val, test = (source.split(s).records for s in ("train", "val", "test"))
    rng = np.random.default_rng(12)
    holdout = [val[i] for i in rng.choice(len(val), 120, replace=False)]
    control = [test[i] for i in rng.choice(len(test), 120, replace=False)]
    copies = _exact_copies([training[i] for i in rng.choice(len(training), 120, replace=False)])
    result = run_audit(AuditCohorts(copies, training, holdout, control), [default_audit_embedder(2)], AuditSettings(n_resamples=200))
    report = result.to_dict()
    assert report["dcr_p_value"] < 1e-6 and report["dcr_auc"] == 1.0 and report["dcr_close_share_ci"][0] > 0.9
    assert report["counts"]["dcr_training_images"] == 2428 and report["counts"]["dcr_holdout_images"] == 120
    assert report["dcr"]["released_at_zero"] == 120 and report["dcr"]["shift"]["p_value"] > 0.05
    assert "released images nearer the training set than holdout images" in report["conclusion"]
