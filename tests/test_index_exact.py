"""Every answer of every backend and strategy of the reference index equals an independent float64
brute force: random, clustered, adversarial (ties, exact boundaries, cancellation, underflow) and real data."""

from __future__ import annotations

import numpy as np
import pytest

from monai_pso.embed.base import Embedding
from monai_pso.errors import ConfigurationError, ImageValueError
from monai_pso.index import ReferenceIndex, available_backends
from monai_pso.index.backends import get_backend
from monai_pso.index.exact import pair_distances

BACKENDS = [b for b in ("faiss-cpu", "torch-cpu", "torch-cuda", "faiss-gpu") if b in available_backends()]
STRATEGIES = ("flat", "pruned")

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_distances(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """``(Q, N)`` float64 Euclidean distances, one query at a time (independent of the package)."""
    refs64 = refs.astype(np.float64)
    return np.stack([np.sqrt(np.sum((refs64 - q.astype(np.float64)) ** 2, axis=1)) for q in queries])


def make_index(refs: np.ndarray, **kwargs) -> ReferenceIndex:
    n = len(refs)
    return ReferenceIndex.from_vectors(refs, np.arange(n), [f"i{i}" for i in range(n)], [f"p{i % 7}" for i in range(n)], **kwargs)


def assert_agrees(index: ReferenceIndex, refs: np.ndarray, queries: np.ndarray, taus, k: int = 3, exact_rows: bool = False) -> None:
    """nearest (distances, rows) and any_within for every backend and strategy against brute force."""
    truth = brute_distances(queries, refs)
    order = np.argsort(truth, axis=1, kind="stable")[:, :k]  # ties: smaller row first
    true_d = np.take_along_axis(truth, order, axis=1)
    rows_q = np.arange(len(queries))[:, None]
    for backend in BACKENDS:
        index.use_backend(backend)
        for strategy in STRATEGIES:
            where = f"{backend}/{strategy}"
            distances, rows = index.nearest(queries, k=k, strategy=strategy)
            np.testing.assert_allclose(distances, true_d, rtol=1e-13, atol=0, err_msg=where)
            np.testing.assert_allclose(truth[rows_q, rows], true_d, rtol=1e-13, atol=0, err_msg=where)
            if exact_rows:
                np.testing.assert_array_equal(rows, order, err_msg=where)
            for tau in taus:
                hits = index.any_within(queries, tau, strategy=strategy)
                np.testing.assert_array_equal(hits, true_d[:, 0] < tau, err_msg=f"{where} tau={tau!r}")


def test_random_gaussian_low_and_high_dimension():
    rng = np.random.default_rng(0)
    for dim in (24, 160):  # below and above the projection filter's threshold
        refs = rng.normal(size=(1200, dim)).astype(np.float32)
        queries = np.concatenate([rng.normal(size=(40, dim)), refs[:5] + 1e-3]).astype(np.float32)
        nn = np.sort(brute_distances(queries, refs), axis=1)[:, 0]
        assert_agrees(make_index(refs, n_clusters=30), refs, queries, np.quantile(nn, [0.05, 0.3, 0.9]))


def test_clustered_data_in_shards_and_cluster_counts():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(15, 130)) * 6
    refs = (centres[rng.integers(0, 15, 1800)] + rng.normal(size=(1800, 130)) * 0.5).astype(np.float32)
    queries = (centres[rng.integers(0, 15, 50)] + rng.normal(size=(50, 130)) * 0.5).astype(np.float32)
    nn = np.sort(brute_distances(queries, refs), axis=1)[:, 0]
    taus = np.quantile(nn, [0.05, 0.5]).tolist() + [float(nn.max()) * 1.01]
    for n_clusters, shard_rows in ((None, 700), (1, 10_000), (90, 10_000)):
        assert_agrees(make_index(refs, n_clusters=n_clusters, shard_rows=shard_rows), refs, queries, taus)


def test_exact_boundaries_and_ties_on_an_integer_lattice():
    """Integer coordinates: every squared distance is an exact integer, so tau can sit exactly on it."""
    rng = np.random.default_rng(2)
    refs = rng.integers(-2, 3, size=(600, 128)).astype(np.float32)
    offsets = np.zeros((30, 128), np.float32)
    offsets[:, 0], offsets[:, 1] = 3, 4  # distance exactly 5 to the ref it is added to
    queries = np.concatenate([refs[:30] + offsets, refs[30:40]])  # and exact copies: distance 0
    taus = [5.0, float(np.nextafter(5.0, 6.0)), float(np.nextafter(5.0, 4.0)), 0.0, 1e-300, float(np.sqrt(30.0))]
    for shard_rows in (10_000, 250):
        assert_agrees(make_index(refs, n_clusters=12, shard_rows=shard_rows), refs, queries, taus, k=4, exact_rows=True)


def test_duplicated_references_break_ties_by_smaller_row():
    rng = np.random.default_rng(3)
    refs = rng.normal(size=(500, 140)).astype(np.float32)
    refs[100:160] = refs[7]  # 61 identical rows
    queries = refs[[7, 7, 3]] + np.array([0.0, 0.25, 0.0], np.float32)[:, None]
    assert_agrees(make_index(refs, n_clusters=20), refs, queries, [0.0, 1e-30, 2.0, 2.9], k=5, exact_rows=True)


def test_large_offset_makes_float32_cancellation_severe():
    """Norms ~ 1e4 with distances ~ 1e-1: float32 ``|q|^2 + |r|^2 - 2 q.r`` is useless, decisions stay exact."""
    rng = np.random.default_rng(4)
    refs = (1000.0 + rng.normal(size=(400, 130)) * 0.01).astype(np.float32)
    queries = (1000.0 + rng.normal(size=(25, 130)) * 0.01).astype(np.float32)
    index = make_index(refs, n_clusters=10)
    boundary = float(index.nearest(queries[:1])[0][0, 0])  # the canonical distance itself: not within
    nn = np.sort(brute_distances(queries, refs), axis=1)[:, 0]
    assert_agrees(index, refs, queries, [float(np.median(nn)), boundary, float(np.nextafter(boundary, 1.0))])
    for strategy in STRATEGIES:
        assert not index.any_within(queries[:1], boundary, strategy=strategy)[0]
        assert index.any_within(queries[:1], float(np.nextafter(boundary, 1.0)), strategy=strategy)[0]


def test_tiny_values_where_float32_squares_underflow():
    rng = np.random.default_rng(5)
    refs = (rng.normal(size=(300, 130)) * 1e-21).astype(np.float32)
    queries = (rng.normal(size=(20, 130)) * 1e-21).astype(np.float32)
    nn = np.sort(brute_distances(queries, refs), axis=1)[:, 0]
    assert_agrees(make_index(refs, n_clusters=8), refs, queries, np.quantile(nn, [0.1, 0.6]))


@pytest.mark.shared_data
def test_real_breastmnist_images(shared_data):
    path = shared_data / "medmnist" / "breastmnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with np.load(path) as data:
        refs = data["train_images"].reshape(len(data["train_images"]), -1).astype(np.float32) / 255
        held_out = np.concatenate([data["val_images"], data["test_images"]]).reshape(-1, 28 * 28).astype(np.float32) / 255
    queries = np.concatenate([held_out[::3], refs[:4]])  # training copies sit at distance 0
    nn = np.sort(brute_distances(queries, refs), axis=1)[:, 0]
    index = make_index(refs, n_clusters=24, shard_rows=300)
    boundary = float(index.nearest(queries[:1])[0][0, 0])
    assert_agrees(index, refs, queries, [0.0, boundary, *np.quantile(nn, [0.01, 0.08, 0.5])])


def test_items_take_the_minimum_over_valid_views():
    rng = np.random.default_rng(6)
    refs = rng.normal(size=(300, 130)).astype(np.float32)
    row_item = np.arange(300) // 3  # three rows (tiles) per training item
    items = [f"img{i}" for i in range(100)]
    patients = [f"pat{i // 4}" for i in range(100)]
    index = ReferenceIndex.from_vectors(refs, row_item, items, patients, n_clusters=10)
    vectors = rng.normal(size=(6, 4, 130)).astype(np.float32)
    vectors[2, 1] = refs[50] + 0.01  # one view of image 2 almost copies a tile of item 16
    valid = rng.random((6, 4)) < 0.7
    valid[:, 0] = True
    valid[2, 1] = True
    valid[4, 2], vectors[4, 2] = False, refs[10]  # an invalid view never counts
    embedding = Embedding(vectors, valid)
    truth = np.array([brute_distances(vectors[b][valid[b]], refs).min() for b in range(6)])
    nearest_rows = [np.unravel_index(brute_distances(vectors[b][valid[b]], refs).argmin(), (valid[b].sum(), 300))[1] for b in range(6)]
    for strategy in STRATEGIES:
        found = index.nearest_items(embedding, strategy=strategy)
        np.testing.assert_allclose(found.distance, truth, rtol=1e-13)
        np.testing.assert_array_equal(found.item, row_item[nearest_rows])
        assert found.item_id[2] == "img16" and found.patient_id[2] == "pat4"
        tau = float(np.sort(truth)[1])
        np.testing.assert_array_equal(index.any_item_within(embedding, tau, strategy=strategy), truth < tau)


def test_bad_queries_are_refused():
    index = make_index(np.eye(4, 130, dtype=np.float32))
    bad = np.zeros((2, 130), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ImageValueError, match="NaN"):
        index.any_within(bad, 1.0)
    with pytest.raises(ImageValueError, match="dimension 12"):
        index.nearest(np.zeros((1, 12), np.float32))
    with pytest.raises(ImageValueError, match="no valid vector"):
        index.any_item_within(Embedding(np.zeros((1, 2, 130), np.float32), np.zeros((1, 2), bool)), 1.0)


def test_bad_search_settings_name_the_setting():
    index = make_index(np.eye(4, 130, dtype=np.float32))
    queries = np.zeros((1, 130), np.float32)
    for call, message in (
        (lambda: index.nearest(queries, k=0), "k=0"),
        (lambda: index.any_within(queries, -1.0), "tau=-1.0"),
        (lambda: index.any_within(queries, 1.0, strategy="fast"), "strategy='fast'"),
        (lambda: get_backend("tpu"), "backend='tpu'"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            call()


def test_pair_distances_is_the_canonical_float64_formula():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(5, 33)).astype(np.float32), rng.normal(size=(5, 33)).astype(np.float32)
    expected = np.sqrt(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=1))
    np.testing.assert_allclose(pair_distances(a, b, np.arange(5), np.arange(5)), expected, rtol=1e-15)


def test_boundaries_when_the_projection_keeps_the_whole_distance():
    """Rows spanning fewer directions than the projection keeps: projected and real distances coincide,
    so only the certified rounding margins separate ``distance == tau`` from ``distance < tau``."""
    rng = np.random.default_rng(8)
    basis = np.linalg.qr(rng.normal(size=(128, 12)))[0]
    refs = (rng.integers(-3, 4, size=(500, 12)) @ basis.T * 7.3).astype(np.float32)
    queries = (refs[:40].astype(np.float64) + rng.normal(size=(40, 12)) @ basis.T * 0.05).astype(np.float32)
    index = make_index(refs, n_clusters=10)
    exact = index.nearest(queries, strategy="flat")[0][:, 0]
    for strategy in STRATEGIES:
        assert not index.any_within(queries, float(exact.min()), strategy=strategy)[np.argmin(exact)]
        for q in range(len(queries)):
            above = float(np.nextafter(exact[q], np.inf))
            assert index.any_within(queries[q : q + 1], above, strategy=strategy)[0], (strategy, q)
            assert not index.any_within(queries[q : q + 1], float(exact[q]), strategy=strategy)[0], (strategy, q)
