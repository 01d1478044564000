"""The guard's grouped search (one radius per image over all its query vectors) equals a float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.embed.views import QueryViews
from monai_pso.errors import ImageValueError
from monai_pso.index import ReferenceIndex, search
from monai_pso.index.exact import pair_distances
from monai_pso.index.groups import ViewGroups, group_starts
from monai_pso.index.query import nearest_training_items
from monai_pso.index.search import Queries


def brute_force(queries: np.ndarray, refs: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical float64 smallest distance per image over every (vector, row) pair, and the smallest row attaining it."""
    q, r = np.divmod(np.arange(len(queries) * len(refs)), len(refs))
    distances = pair_distances(queries, refs, q, r).reshape(len(queries), len(refs))
    best = np.array([distances[owner == b].min() for b in range(owner[-1] + 1)])
    rows = np.array([np.flatnonzero((distances[owner == b] == best[b]).any(axis=0)).min() for b in range(owner[-1] + 1)])
    return best, rows


def clustered_case(rng: np.random.Generator, projected: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """References in clusters (some duplicated, some rounded), images as clouds of view vectors near them;
    ``projected``: 128 dimensions or more, where shards carry the projection filter."""
    dim = int(rng.integers(128, 200)) if projected else int(rng.integers(2, 48))
    n_refs = int(rng.integers(1, 800 if projected else 1500))
    centres = rng.normal(size=(int(rng.integers(1, 12)), dim)) * rng.uniform(0.5, 5.0)
    refs = centres[rng.integers(0, len(centres), n_refs)] + rng.normal(size=(n_refs, dim)) * rng.uniform(0.01, 1.5)
    if rng.random() < 0.4:
        refs = np.round(refs, 1)  # exact ties between rows and between views
    refs = refs.astype(np.float32)
    if n_refs > 4 and rng.random() < 0.5:
        refs[rng.integers(0, n_refs, 3)] = refs[0]
    n_images = int(rng.integers(1, 9))
    owner = np.repeat(np.arange(n_images), rng.integers(1, 40, n_images))
    base = refs[rng.integers(0, n_refs, n_images)] + rng.normal(size=(n_images, dim)) * rng.uniform(0.0, 2.0, (n_images, 1))
    spread = rng.uniform(0.0, 3.0, len(owner))[:, None] * rng.uniform(0.0, 1.0)
    queries = (base[owner] + rng.normal(size=(len(owner), dim)) * spread).astype(np.float32)
    if rng.random() < 0.4:
        queries[rng.integers(0, len(queries))] = refs[rng.integers(0, n_refs)]  # a view that copies a row exactly
    return refs, queries, owner


@pytest.mark.parametrize("backend, projected", [("faiss-cpu", False), ("faiss-cpu", True), ("torch-cpu", False), ("torch-cpu", True)])
def test_grouped_search_equals_float64_brute_force_on_random_clustered_views(backend, projected):
    rng = np.random.default_rng([17, backend == "faiss-cpu", projected])
    for _ in range(10):
        refs, queries, owner = clustered_case(rng, projected)
        shard_rows = int(rng.integers(max(1, len(refs) // 3), len(refs) + 1))
        index = ReferenceIndex.from_vectors(refs, np.arange(len(refs)), [str(i) for i in range(len(refs))], ["p"] * len(refs), shard_rows=shard_rows, backend=backend)
        assert all(bool(s.projection_dim) == projected for s in index.shards)
        truth, truth_rows = brute_force(queries, refs, owner)
        for strategy in ("flat", "pruned", "auto"):
            distance, row = index.nearest_per_image(queries, owner, strategy=strategy)
            np.testing.assert_array_equal(distance, truth)
            np.testing.assert_array_equal(row, truth_rows)


def test_auto_mixes_flat_and_grouped_shards_without_changing_an_answer(monkeypatch):
    rng = np.random.default_rng(23)
    for _ in range(6):
        refs, queries, owner = clustered_case(rng, projected=bool(rng.random() < 0.5))
        shard_rows = int(rng.integers(200, 500))
        extra = 3 * shard_rows + int(rng.integers(1, shard_rows))  # full shards and a smaller last one
        refs = np.concatenate([refs, refs[rng.integers(0, len(refs), extra)] + rng.normal(size=(extra, refs.shape[1])).astype(np.float32) * 0.1])
        index = ReferenceIndex.from_vectors(refs, np.arange(len(refs)), [str(i) for i in range(len(refs))], ["p"] * len(refs), shard_rows=shard_rows)
        monkeypatch.setattr(search, "AUTO_GROUPED_MIN_ROWS", shard_rows)  # full shards grouped, the last one flat
        assert {searcher.groups_pay("auto") for searcher in index.searchers()} == {True, False}
        distance, row = index.nearest_per_image(queries, owner, strategy="auto")
        truth, truth_rows = brute_force(queries, refs, owner)
        np.testing.assert_array_equal(distance, truth)
        np.testing.assert_array_equal(row, truth_rows)


def test_views_of_images_through_the_guard_path_equal_brute_force():
    rng = np.random.default_rng(5)
    embedder = PixelEmbedder(grid=12)  # 144 dimensions: the projection filter is on
    training = torch.from_numpy(rng.random((60, 1, 16, 16)).astype(np.float32))
    refs = embedder.embed(training).vectors[:, 0]
    index = ReferenceIndex.from_vectors(refs, np.arange(60), [f"t{i}" for i in range(60)], ["p"] * 60, n_clusters=6, image_shape=(16, 16))
    assert index.shards[0].projection_dim > 0
    views = QueryViews(max_shift=1, rotations=(-5.0, 5.0), intensity=((0.9, 0.05),))
    images = torch.cat([training[:3].flip(-1), torch.from_numpy(rng.random((3, 1, 16, 16)).astype(np.float32))])
    found = nearest_training_items(index, embedder, images, views)
    embedding = views.embed(embedder, images)
    truth, truth_rows = brute_force(embedding.rows(), refs, embedding.row_owner())
    np.testing.assert_array_equal(found.distance, truth)
    np.testing.assert_array_equal(found.row, truth_rows)
    assert found.item_id[:3] == ["t0", "t1", "t2"] and np.all(found.distance[:3] < 1e-6)  # the flipped copies


def test_ties_go_to_the_smaller_row_over_all_vectors_of_an_image():
    refs = np.array([[5, 5], [0, 0], [3, 0], [0, 0], [3, 0]], np.float32)
    queries = np.array([[0.5, 0.5], [3, 0], [9, 9], [9, 9]], np.float32)
    index = ReferenceIndex.from_vectors(refs, np.arange(5), list("abcde"), ["p"] * 5)
    distance, row = index.nearest_per_image(queries, np.array([0, 0, 1, 1]))
    assert distance.tolist() == [0.0, float(pair_distances(queries, refs, np.array([2]), np.array([0]))[0])]
    assert row.tolist() == [2, 0]


def test_pivots_cover_every_vector_and_pruning_skips_most_pairs_of_close_views():
    rng = np.random.default_rng(3)
    refs = rng.normal(size=(4000, 32)).astype(np.float32)
    owner = np.repeat(np.arange(4), 50)
    queries = (refs[rng.integers(0, 4000, 4)][owner] + rng.normal(size=(200, 32)) * 0.02 + rng.normal(size=(4, 32))[owner] * 0.5).astype(np.float32)
    block = Queries.of(queries)
    cover = rng.uniform(0.05, 0.5, 4)
    groups = ViewGroups.cover(block, owner, cover)
    members_distance = pair_distances(queries, queries, np.arange(200), groups.pivots[groups.pivot_of])
    assert np.all(members_distance <= cover[owner]) and np.all(members_distance <= groups.reach)
    assert np.all(groups.pivot_reach()[groups.pivot_of] >= groups.reach) and np.all(groups.reach[groups.pivots] == 0)
    assert np.all(owner[groups.pivots[groups.pivot_of]] == owner)
    assert set(group_starts(owner)[:-1]) <= set(groups.pivots.tolist())
    index = ReferenceIndex.from_vectors(refs, np.arange(4000), [str(i) for i in range(4000)], ["p"] * 4000)
    searcher = index.searchers()[0]
    searcher.pairs_scanned = 0
    distance, _ = index.nearest_per_image(queries, owner, strategy="pruned")
    np.testing.assert_array_equal(distance, brute_force(queries, refs, owner)[0])
    assert searcher.pairs_scanned < 0.2 * len(queries) * len(refs)


def test_owner_numbers_must_run_without_gaps():
    index = ReferenceIndex.from_vectors(np.eye(2, dtype=np.float32), [0, 1], ["a", "b"], ["p", "q"])
    with pytest.raises(ImageValueError, match="owner"):
        index.nearest_per_image(np.eye(2, dtype=np.float32), np.array([0, 2]))
