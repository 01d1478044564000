"""Building from a SOURCE, persistence (atomic, sha256-verified, fingerprint-checked), shards and mmap."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from monai_pso.data import DataSource, ImageRecord
from monai_pso.embed.base import Embedder, Embedding
from monai_pso.errors import FingerprintMismatchError, ImageValueError, IndexIntegrityError
from monai_pso.index import ReferenceIndex, build_index
from monai_pso.index.shard import Shard
from monai_pso.index.storage import MANIFEST_NAME, read_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


class FlattenEmbedder(Embedder):
    """Test-local embedder: the image's pixels (optionally scaled), one vector per image."""

    name = "flatten"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def embed(self, images: torch.Tensor | np.ndarray) -> Embedding:
        return Embedding.single(np.asarray(images, np.float32).reshape(len(images), -1) * self.scale)

    @property
    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale}


def random_index(n: int = 900, dim: int = 130, seed: int = 0, **kwargs) -> tuple[ReferenceIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=(n, dim)).astype(np.float32)
    index = ReferenceIndex.from_vectors(
        refs, np.arange(n) // 3, [f"i{i}" for i in range(n // 3)], [f"p{i // 5}" for i in range(n // 3)], image_shape=(10, 13), **kwargs
    )
    return index, rng.normal(size=(30, dim)).astype(np.float32)


def answers(index: ReferenceIndex, queries: np.ndarray) -> dict[str, np.ndarray]:
    distances, rows = index.nearest(queries, k=3)
    tau = float(np.median(distances[:, 0]))
    out = {"distances": distances, "rows": rows, "items": index.item_of_rows(rows)}
    for strategy in ("flat", "pruned"):
        out[f"within_{strategy}"] = index.any_within(queries, tau, strategy=strategy)
        out[f"pruned_rows_{strategy}"] = index.nearest(queries, k=2, strategy=strategy)[1]
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# -- build ---------------------------------------------------------------------------------------------


def test_build_from_phantom_source(phantom_2d_source):
    embedder = FlattenEmbedder()
    index = build_index(phantom_2d_source, embedder, batch_size=5, progress=False)
    from monai_pso.data import load_image, load_source

    train = load_source(phantom_2d_source).split("train")
    assert index.image_shape == (32, 32) and index.dim == 32 * 32
    assert index.item_ids == [r.item_id for r in train] and index.patient_ids == [r.patient_id for r in train]
    assert index.embedder.fingerprint == embedder.fingerprint and index.embedder.settings["scale"] == 1.0
    images = np.stack([load_image(r) for r in train.records[:4]])
    found = index.nearest_items(embedder.embed_queries(images))
    np.testing.assert_array_equal(found.distance, 0.0)
    assert found.item_id == [r.item_id for r in train.records[:4]]
    assert found.patient_id == [r.patient_id for r in train.records[:4]]
    index.check_compatible((32, 32), embedder)
    with pytest.raises(ImageValueError, match="3D"):
        index.check_compatible((32, 32, 32))
    with pytest.raises(FingerprintMismatchError, match=FlattenEmbedder(2.0).fingerprint):
        index.check_compatible((32, 32), FlattenEmbedder(2.0))


def test_build_refuses_mixed_shapes_and_empty_splits():
    records = [
        ImageRecord("a", "p1", np.zeros((1, 8, 8), np.float32), split="train"),
        ImageRecord("b", "p2", np.zeros((1, 8, 9), np.float32), split="train"),
        ImageRecord("c", "p3", np.zeros((1, 8, 8), np.float32), split="test"),
    ]
    with pytest.raises(ImageValueError, match=r"'b'.*\(8, 9\).*'a'.*\(8, 8\)"):
        build_index(DataSource(records, "mixed"), FlattenEmbedder(), progress=False)
    with pytest.raises(IndexIntegrityError, match="no images"):
        build_index(DataSource(records[2:], "only test"), FlattenEmbedder(), progress=False)


def test_empty_index_is_refused():
    with pytest.raises(IndexIntegrityError, match="no reference rows"):
        ReferenceIndex.from_vectors(np.zeros((0, 8), np.float32), [], [], [])


# -- persistence ---------------------------------------------------------------------------------------


def test_round_trip_with_manifest(tmp_path):
    index, queries = random_index(shard_rows=400)
    folder = index.save(tmp_path / "index")
    manifest = read_manifest(folder)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    assert set(manifest["files"]) == files and all(len(h) == 64 for h in manifest["files"].values())
    assert manifest["metric"] == "l2" and manifest["dim"] == 130 and manifest["image_shape"] == [10, 13]
    assert manifest["counts"] == {"rows": 900, "items": 300, "patients": 60, "shards": 3, "clusters": manifest["counts"]["clusters"]}
    assert manifest["package_version"] and manifest["created"]
    for mmap in (True, False):
        loaded = ReferenceIndex.load(folder, mmap=mmap)
        assert isinstance(loaded.shards[0].vectors, np.memmap) == mmap
        assert_same(answers(index, queries), answers(loaded, queries))
        assert loaded.image_shape == (10, 13) and loaded.item_ids == index.item_ids


def test_sharded_and_memory_mapped_equals_unsharded(tmp_path):
    reference, queries = random_index(n=1200, seed=1)
    expected = answers(reference, queries)
    for shard_rows in (500, 211):
        sharded, _ = random_index(n=1200, seed=1, shard_rows=shard_rows)
        assert len(sharded.shards) == -(-1200 // shard_rows)
        loaded = ReferenceIndex.load(sharded.save(tmp_path / f"s{shard_rows}"), mmap=True)
        assert_same(expected, answers(loaded, queries))


def test_partial_load_maps_only_its_rows(tmp_path):
    index, queries = random_index(shard_rows=300)
    folder = index.save(tmp_path / "index")
    part = ReferenceIndex.load(folder, shards=[1])
    assert part.n_rows == 300 and part.total_rows == 900
    rows = np.array([0, 299, 300, 599, 600, -1])
    np.testing.assert_array_equal(part.item_of_rows(rows), [-1, -1, 100, 199, -1, -1])
    with pytest.raises(IndexIntegrityError, match="partial"):
        part.save(tmp_path / "copy")


def test_corrupted_missing_and_edited_files_are_refused(tmp_path):
    index, _ = random_index(shard_rows=450)
    folder = index.save(tmp_path / "index")
    vectors = folder / "shard-00001" / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[len(data) // 2] ^= 0x01
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match=r"shard-00001/vectors\.npy: sha256 mismatch"):
        ReferenceIndex.load(folder)
    ReferenceIndex.load(folder, shards=[0])  # the intact shard still loads on its own

    folder = index.save(tmp_path / "index2")
    (folder / "shard-00000" / "member_dist.npy").unlink()
    with pytest.raises(IndexIntegrityError, match=r"member_dist\.npy: missing"):
        ReferenceIndex.load(folder)

    folder = index.save(tmp_path / "index3")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["dim"] = 64
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexIntegrityError, match="manifest was modified"):
        ReferenceIndex.load(folder)
    with pytest.raises(IndexIntegrityError, match="missing"):
        ReferenceIndex.load(tmp_path / "nothing-here")


def test_an_empty_index_on_disk_is_refused(tmp_path):
    from monai_pso.index.storage import _manifest_digest

    index, _ = random_index()
    folder = index.save(tmp_path / "index")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["counts"]["rows"] = 0
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexIntegrityError, match="no reference rows"):
        ReferenceIndex.load(folder)


def test_fingerprint_mismatch_names_both(tmp_path):
    embedder = FlattenEmbedder()
    index = build_index("phantom:2d?patients=4&acquisitions=2&size=16", embedder, progress=False)
    folder = index.save(tmp_path / "index")
    ReferenceIndex.load(folder, embedder=FlattenEmbedder())
    other = FlattenEmbedder(scale=0.5)
    with pytest.raises(FingerprintMismatchError) as caught:
        ReferenceIndex.load(folder, embedder=other)
    assert embedder.fingerprint in str(caught.value) and other.fingerprint in str(caught.value)


def test_writes_are_atomic(tmp_path, monkeypatch):
    index, queries = random_index(shard_rows=450)
    folder = index.save(tmp_path / "index")
    before = answers(ReferenceIndex.load(folder), queries)
    newer, _ = random_index(seed=5, shard_rows=450)

    def crash(self, directory):
        raise OSError("disk full")

    monkeypatch.setattr(Shard, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        newer.save(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no temporary folder left behind
    assert_same(before, answers(ReferenceIndex.load(folder), queries))  # the old index is intact

    newer.save(folder)  # replacing an index swaps it in whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    assert_same(answers(newer, queries), answers(ReferenceIndex.load(folder), queries))

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(IndexIntegrityError, match="not a reference index"):
        index.save(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_fingerprint_is_recorded_at_save_and_checked_at_load(tmp_path):
    from monai_pso.index.storage import _manifest_digest

    index, _ = random_index(shard_rows=300)
    other, _ = random_index(seed=3, shard_rows=300)
    folder = index.save(tmp_path / "index")
    manifest = read_manifest(folder)
    assert manifest["fingerprint"] == index.fingerprint != other.fingerprint
    assert ReferenceIndex.load(folder).fingerprint == index.fingerprint
    assert ReferenceIndex.load(folder, shards=[2]).fingerprint == index.fingerprint  # a part answers for the whole index

    del manifest["fingerprint"]  # as an index saved before fingerprints were recorded
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert ReferenceIndex.load(folder).fingerprint == index.fingerprint  # computed from the content instead
    with pytest.raises(IndexIntegrityError, match="load the whole index"):
        _ = ReferenceIndex.load(folder, shards=[0]).fingerprint

    manifest["fingerprint"] = other.fingerprint
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexIntegrityError, match="fingerprint"):
        ReferenceIndex.load(folder)


def test_rebuilding_an_index_never_drops_its_release_ledger(tmp_path):
    from monai_pso.release.ledger import LEDGER_FILES, append_entry, verify_ledger

    index, queries = random_index(shard_rows=450)
    folder = index.save(tmp_path / "index")
    append_entry(folder, {"command": "gate", "release_path": "/releases/r1"})
    ledger = {name: (folder / name).read_bytes() for name in LEDGER_FILES}
    newer, _ = random_index(seed=5, shard_rows=450)

    with pytest.raises(IndexIntegrityError, match="release ledger.*keep_ledger=True"):
        newer.save(folder)
    assert {name: (folder / name).read_bytes() for name in LEDGER_FILES} == ledger
    assert_same(answers(index, queries), answers(ReferenceIndex.load(folder), queries))  # the old index is untouched

    newer.save(folder, keep_ledger=True)
    assert {name: (folder / name).read_bytes() for name in LEDGER_FILES} == ledger
    assert_same(answers(newer, queries), answers(ReferenceIndex.load(folder), queries))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".index.lock", "index"]  # no staging folder left; the lock lies beside
    append_entry(folder, {"command": "gate", "release_path": "/releases/r2"})
    assert [e.release_path for e in verify_ledger(folder)] == ["/releases/r1", "/releases/r2"]
