"""Exactness that cannot be switched off from outside: autocast and matmul precision settings of the caller
change no answer, a backend's reduced-precision result is refused, and every array a search reads is covered
by the index's fingerprint or recomputed at load (a tamper test for each, with the manifest's sha256s redone
as an attacker editing the files would)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_pso.errors import IndexIntegrityError
from monai_pso.index import ReferenceIndex, available_backends
from monai_pso.index.backends import NumpyBackend, TorchBackend
from monai_pso.index.shard import SHARD_ARRAYS, array_digest
from monai_pso.index.storage import MANIFEST_NAME, _manifest_digest
from monai_pso.io import sha256_file

BACKENDS = [b for b in ("faiss-cpu", "torch-cpu", "torch-cuda", "faiss-gpu") if b in available_backends()]
STRATEGIES = ("flat", "pruned")

pytestmark = pytest.mark.usefixtures("one_thread")


# -- autocast and precision settings ------------------------------------------------------------------


def near_ties(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """References where low precision changes the answer, and queries on them.

    400 rows lie at distances 0.05 .. 0.45 (steps of 0.001) around a point of norm ~40, with 400 far rows:
    in float16 ``|q|^2 ~ 1600`` is resolved to 1, in bfloat16 to 8, so every near row looks the same.
    """
    rng = np.random.default_rng(seed)
    dim, n = 16, 400
    base = rng.normal(size=dim) * 10
    direction = rng.normal(size=(n, dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    near = base + (0.05 + 0.001 * rng.permutation(n))[:, None] * direction
    far = rng.normal(size=(n, dim)) * 10
    refs = np.concatenate([near, far]).astype(np.float32)
    queries = np.stack([base, base + 0.01, base - 0.02 * direction[7], far[3] + 1e-3]).astype(np.float32)
    return refs, queries


def brute(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    refs64 = refs.astype(np.float64)
    return np.stack([np.sqrt(((refs64 - q.astype(np.float64)) ** 2).sum(axis=1)) for q in queries])


def autocast_dtypes() -> list[torch.dtype]:
    dtypes = [torch.bfloat16]
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            pass
        dtypes.append(torch.float16)
    except (RuntimeError, ValueError):  # older torch: CPU autocast is bfloat16 only
        pass
    return dtypes


def answers(index: ReferenceIndex, queries: np.ndarray, taus: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for strategy in STRATEGIES:
        out[f"{strategy} distances"], out[f"{strategy} rows"] = index.nearest(queries, k=3, strategy=strategy)
        for j, tau in enumerate(taus):
            out[f"{strategy} within {j}"] = index.any_within(queries, float(tau), strategy=strategy)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_of_the_caller_changes_no_answer(backend):
    refs, queries = near_ties()
    index = ReferenceIndex.from_vectors(refs, np.arange(len(refs)), [f"i{i}" for i in range(len(refs))], ["p"] * len(refs), n_clusters=8, backend=backend)
    truth = brute(queries, refs)
    order = np.argsort(truth, axis=1, kind="stable")[:, :3]
    nearest = truth[np.arange(len(queries)), order[:, 0]]
    taus = np.concatenate([np.nextafter(nearest, np.inf), nearest, nearest * (1 + 1e-6)])  # just above, at, and between near-ties
    expected = answers(index, queries, taus)
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(expected[f"{strategy} rows"], order, err_msg=strategy)
        np.testing.assert_allclose(expected[f"{strategy} distances"], np.take_along_axis(truth, order, axis=1), rtol=1e-13, atol=0, err_msg=strategy)
        for j, tau in enumerate(taus):
            np.testing.assert_array_equal(expected[f"{strategy} within {j}"], nearest < tau, err_msg=f"{strategy} tau {tau!r}")
    devices = ["cpu"] + (["cuda"] if backend in ("torch-cuda", "faiss-gpu") else [])
    for device in devices:
        for dtype in autocast_dtypes() if device == "cpu" else [torch.float16, torch.bfloat16]:
            fresh = ReferenceIndex.from_vectors(refs, np.arange(len(refs)), index.item_ids, index.patient_ids, n_clusters=8, backend=backend)
            with torch.autocast(device, dtype=dtype):
                got = answers(fresh, queries, taus)  # rows are placed on the backend inside the autocast region too
                assert torch.is_autocast_enabled(device)  # the caller's setting is left as it was
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{backend} autocast {device} {dtype}: {key}")


def test_float32_matmul_precision_settings_of_the_caller_change_no_answer():
    refs, queries = near_ties(1)
    index = ReferenceIndex.from_vectors(refs, np.arange(len(refs)), [f"i{i}" for i in range(len(refs))], ["p"] * len(refs), n_clusters=8, backend="torch-cpu")
    expected = answers(index, queries, [0.06])
    settings = [s for s in (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul) if hasattr(s, "fp32_precision")]
    before = [s.fp32_precision for s in settings]
    try:
        torch.set_float32_matmul_precision("medium")
        got = answers(index, queries, [0.06])
        assert torch.get_float32_matmul_precision() == "medium"
        if settings:  # torch >= 2.9: per-backend settings, in a mix the legacy getter refuses
            torch.backends.mkldnn.matmul.fp32_precision = "bf16"
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            mixed = answers(index, queries, [0.06])
            assert (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("bf16", "ieee")
            for key in expected:
                np.testing.assert_array_equal(mixed[key], expected[key], err_msg=key)
    finally:
        torch.set_float32_matmul_precision("highest")
        for setting, value in zip(settings, before):
            setting.fp32_precision = value
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_the_guard_measures_the_same_distances_inside_autocast():
    """Query embedding and search (what the guard and calibration call) and index building, under autocast."""
    from monai_pso.embed.pixel import PixelEmbedder
    from monai_pso.embed.views import QueryViews
    from monai_pso.index import build_index
    from monai_pso.index.query import nearest_training_items

    source = "phantom:2d?patients=4&acquisitions=2&size=16&seed=2"
    embedder = PixelEmbedder(tiles=3)
    views = QueryViews(max_shift=1, rotations=(2.5,))
    images = np.random.default_rng(0).random((3, 1, 16, 16)).astype(np.float32)
    index = build_index(source, embedder, progress=False)
    expected = nearest_training_items(index, embedder, images, views)
    for dtype in autocast_dtypes():
        with torch.autocast("cpu", dtype=dtype):
            assert build_index(source, embedder, progress=False).fingerprint == index.fingerprint
            found = nearest_training_items(index, embedder, images, views)
        np.testing.assert_array_equal(found.distance, expected.distance, err_msg=str(dtype))
        np.testing.assert_array_equal(found.row, expected.row, err_msg=str(dtype))


class HalfPrecisionBackend(NumpyBackend):
    """A faulty backend: its k-NN distances come back in float16."""

    name = "half"

    def _knn(self, queries, placed, k, start, stop):
        distances, positions = super()._knn(queries, placed, k, start, stop)
        return distances.astype(np.float16), positions


def test_reduced_precision_results_are_refused(monkeypatch):
    refs, queries = near_ties()
    index = ReferenceIndex.from_vectors(refs, np.arange(len(refs)), [f"i{i}" for i in range(len(refs))], ["p"] * len(refs), backend=HalfPrecisionBackend())
    with pytest.raises(IndexIntegrityError, match=r"half backend: knn gave squared distances of dtype float16, the exact search needs float32"):
        index.nearest(queries, strategy="flat")
    # were autocast left on, the torch backend's own check refuses the half-precision block instead of deciding on it
    import monai_pso.index.backends as backends
    import monai_pso.index.reference as reference

    monkeypatch.setattr(backends, "exact_arithmetic", contextlib.nullcontext)
    monkeypatch.setattr(reference, "exact_arithmetic", contextlib.nullcontext)
    index.use_backend(TorchBackend("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(IndexIntegrityError, match=r"torch-cpu backend: .*dtype bfloat16"):
        index.any_within(queries, 0.06, strategy="flat")


# -- every array a search reads ---------------------------------------------------------------------


def saved_index(tmp_path: Path, name: str = "index") -> tuple[ReferenceIndex, Path, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 130)) * 4
    refs = (centres[rng.integers(0, 6, 600)] + rng.normal(size=(600, 130))).astype(np.float32)
    index = ReferenceIndex.from_vectors(refs, np.arange(600) // 2, [f"i{i}" for i in range(300)], [f"p{i // 3}" for i in range(300)], shard_rows=300, n_clusters=6)
    assert index.shards[0].projection_dim > 0  # the projection filter is in use
    return index, index.save(tmp_path / name), refs


def _perturb_centroid(c: np.ndarray) -> np.ndarray:
    c = c.copy()
    c[0] += 0.05
    return c


def _move_boundary(offsets: np.ndarray) -> np.ndarray:
    offsets = offsets.copy()
    offsets[1] += 1
    return offsets


def _swap_rows(row_id: np.ndarray) -> np.ndarray:
    row_id = row_id.copy()
    row_id[[0, 1]] = row_id[[1, 0]]
    return row_id


def _change_first(values: np.ndarray, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    values = values.copy()
    values[0] = change(values[0])
    return values


#: How each array is tampered with; every change alters what a search reads.
TAMPER: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "vectors": lambda v: _change_first(v, lambda row: row + np.float32(0.25)),
    "row_id": _swap_rows,
    "row_item": lambda v: _change_first(v, lambda item: item + 1),
    "norms": lambda v: v * 0.999,
    "centroids": _perturb_centroid,
    "offsets": _move_boundary,
    "member_dist": lambda v: v / 100,  # the cluster radii divided by 100
    "projection": lambda v: v * np.float32(0.5),
    "projected": lambda v: np.zeros_like(v),
}

#: Arrays checked against the vectors at load: refused even when every digest and the fingerprint are redone.
RECOMPUTED = {"vectors": "norms", "norms": "norms", "member_dist": "member_dist", "centroids": "centroids", "offsets": "offsets"}


def tamper(folder: Path, shard: str, name: str, *, redo_digests: bool = False, index: ReferenceIndex | None = None) -> None:
    """Edit ``shard/name.npy`` and redo the manifest's file sha256s and ``manifest_sha256``; with
    ``redo_digests`` also the array digests and the content fingerprint (an attacker who read the code)."""
    path = folder / shard / f"{name}.npy"
    np.save(path, np.ascontiguousarray(TAMPER[name](np.load(path))))
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["files"][f"{shard}/{name}.npy"] = sha256_file(path)
    if redo_digests:
        entry = next(e for e in manifest["shards"] if e["name"] == shard)
        entry["arrays"][name] = array_digest(name, np.load(path))
        manifest["fingerprint"] = index.fingerprint_of_shards(manifest["shards"])
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_every_search_array_is_covered():
    assert set(TAMPER) == set(SHARD_ARRAYS)


@pytest.mark.parametrize("name", list(SHARD_ARRAYS))
def test_a_tampered_array_is_refused_naming_it(tmp_path, name):
    index, folder, _ = saved_index(tmp_path)
    tamper(folder, "shard-00001", name)
    with pytest.raises(IndexIntegrityError, match=rf"shard-00001/{name}\.npy: content differs from the digest recorded"):
        ReferenceIndex.load(folder)
    with pytest.raises(IndexIntegrityError, match=rf"{name}\.npy"):
        ReferenceIndex.load(folder, shards=[1])  # a process loading only that shard refuses it too
    assert ReferenceIndex.load(folder, shards=[0]).fingerprint == index.fingerprint  # the intact shard loads on its own


@pytest.mark.parametrize("name", list(SHARD_ARRAYS))
def test_a_tampered_array_with_every_digest_redone(tmp_path, name):
    index, folder, refs = saved_index(tmp_path)
    tamper(folder, "shard-00000", name, redo_digests=True, index=index)
    if name in RECOMPUTED:  # recomputed from the vectors at load: refused whatever the manifest says
        with pytest.raises(IndexIntegrityError, match=rf"shard-00000/{RECOMPUTED[name]}\.npy|{name}\.npy"):
            ReferenceIndex.load(folder)
    else:  # covered by the fingerprint: a different index, which no threshold or guard of the original accepts
        loaded = ReferenceIndex.load(folder)
        assert loaded.fingerprint != index.fingerprint


def test_radii_divided_by_100_are_refused_and_the_intact_index_finds_the_near_copies(tmp_path):
    index, folder, refs = saved_index(tmp_path)
    rng = np.random.default_rng(0)
    copies = refs[rng.choice(len(refs), 50, replace=False)] + rng.normal(scale=1e-3, size=(50, 130)).astype(np.float32)
    loaded = ReferenceIndex.load(folder)
    assert loaded.fingerprint == index.fingerprint
    assert loaded.any_within(copies, 0.1, strategy="pruned").all()
    for shard in ("shard-00000", "shard-00001"):
        tamper(folder, shard, "member_dist", redo_digests=True, index=index)
    with pytest.raises(IndexIntegrityError, match=r"member_dist\.npy: .*member distances \(so the radii of clusters"):
        ReferenceIndex.load(folder)


def test_a_rewritten_fingerprint_is_refused_also_by_a_partial_load(tmp_path):
    index, folder, _ = saved_index(tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["fingerprint"] = "0" * 64
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    for shards in (None, [0]):
        with pytest.raises(IndexIntegrityError, match="the manifest records 0000"):
            ReferenceIndex.load(folder, shards=shards)


def test_an_index_saved_without_array_digests_is_refused(tmp_path):
    _, folder, _ = saved_index(tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for entry in manifest["shards"]:
        del entry["arrays"]
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexIntegrityError, match="records no content digests .* build the index again"):
        ReferenceIndex.load(folder)


def test_an_untouched_index_loads_with_the_same_fingerprint_and_answers(tmp_path):
    index, folder, refs = saved_index(tmp_path)
    queries = refs[:20] + np.float32(0.01)
    loaded = ReferenceIndex.load(folder)
    assert loaded.fingerprint == index.fingerprint == json.loads((folder / MANIFEST_NAME).read_text())["fingerprint"]
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(loaded.nearest(queries, k=2, strategy=strategy)[1], index.nearest(queries, k=2, strategy=strategy)[1])
