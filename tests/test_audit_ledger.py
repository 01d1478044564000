"""The release ledger: hash chain, tamper detection naming the entry, atomic appends, releases from manifests."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from monai_pso.errors import DataSourceError, FingerprintMismatchError, IndexIntegrityError, LedgerIntegrityError
from monai_pso.release.ledger import HEAD_FILE, LEDGER_FILE, append_entry, append_release, verify_ledger
from monai_pso.release.manifest import check_unchanged


def _ledger_with(index_dir: Path, n: int) -> list:
    return [append_entry(index_dir, {"command": "gate", "release_path": f"/releases/r{k}", "files": {"a.png": "0" * 64}, "threshold": 0.1 * k}) for k in range(1, n + 1)]


def _lines(index_dir: Path) -> list[str]:
    return (index_dir / LEDGER_FILE).read_text().splitlines()


def _write_lines(index_dir: Path, lines: list[str]) -> None:
    (index_dir / LEDGER_FILE).write_text("\n".join(lines) + "\n")


def test_chain_links_and_verifies(tmp_path):
    entries = _ledger_with(tmp_path, 3)
    assert [e.seq for e in verify_ledger(tmp_path)] == [1, 2, 3]
    assert entries[1].prev_hash == entries[0].hash and entries[2].prev_hash == entries[1].hash
    assert json.loads((tmp_path / HEAD_FILE).read_text()) == {"entries": 3, "hash": entries[2].hash}
    (tmp_path / "fresh").mkdir()
    assert verify_ledger(tmp_path / "fresh") == []


def test_edited_entry_is_named(tmp_path):
    _ledger_with(tmp_path, 3)
    lines = _lines(tmp_path)
    document = json.loads(lines[1])
    document["threshold"] = 0.0  # loosen the recorded threshold of release 2
    lines[1] = json.dumps(document)
    _write_lines(tmp_path, lines)
    with pytest.raises(LedgerIntegrityError, match=r"line 2 \(entry 2, release /releases/r2\): the entry was edited"):
        verify_ledger(tmp_path)


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path):
    entries = _ledger_with(tmp_path, 3)
    from dataclasses import asdict, replace

    forged = replace(entries[1], threshold=0.0)
    forged = replace(forged, hash=forged.computed_hash())
    lines = _lines(tmp_path)
    lines[1] = json.dumps(asdict(forged))
    _write_lines(tmp_path, lines)
    with pytest.raises(LedgerIntegrityError, match=r"line 3 \(entry 3.*does not chain to entry 2"):
        verify_ledger(tmp_path)


def test_deleted_entry_is_named(tmp_path):
    _ledger_with(tmp_path, 3)
    lines = _lines(tmp_path)
    _write_lines(tmp_path, [lines[0], lines[2]])
    with pytest.raises(LedgerIntegrityError, match=r"line 2 \(entry 3.*entry 2 is missing"):
        verify_ledger(tmp_path)


def test_entry_deleted_from_the_end_is_caught_by_the_head(tmp_path):
    _ledger_with(tmp_path, 3)
    _write_lines(tmp_path, _lines(tmp_path)[:2])
    with pytest.raises(LedgerIntegrityError, match="entries 3 to 3 are missing"):
        verify_ledger(tmp_path)


def test_reordering_is_detected(tmp_path):
    _ledger_with(tmp_path, 3)
    lines = _lines(tmp_path)
    _write_lines(tmp_path, [lines[1], lines[0], lines[2]])
    with pytest.raises(LedgerIntegrityError, match=r"line 1 \(entry 2"):
        verify_ledger(tmp_path)


def test_garbage_line_is_named(tmp_path):
    _ledger_with(tmp_path, 2)
    _write_lines(tmp_path, [_lines(tmp_path)[0], "{not json"])
    with pytest.raises(LedgerIntegrityError, match="line 2: not a ledger entry"):
        verify_ledger(tmp_path)


def test_ledger_error_is_an_index_integrity_error():
    assert issubclass(LedgerIntegrityError, IndexIntegrityError)


def test_append_refuses_a_broken_ledger(tmp_path):
    _ledger_with(tmp_path, 2)
    _write_lines(tmp_path, _lines(tmp_path)[1:])
    with pytest.raises(LedgerIntegrityError):
        append_entry(tmp_path, {"command": "gate", "release_path": "/r3"})
    assert len(_lines(tmp_path)) == 1  # nothing written


def test_concurrent_appends_keep_one_chain(tmp_path):
    threads = [threading.Thread(target=append_entry, args=(tmp_path, {"command": "gate", "release_path": f"/r{k}"})) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = verify_ledger(tmp_path)
    assert len(entries) == 8 and sorted(e.release_path for e in entries) == sorted(f"/r{k}" for k in range(8))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _release(folder: Path, manifest: dict) -> Path:
    folder.mkdir()
    for name in ("img-0.png", "img-1.png"):
        (folder / name).write_bytes(name.encode() * 10)
    (folder / "audit.csv").write_text("item,nn_distance\n")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_append_release_reads_the_manifest_and_hashes_files(tmp_path):
    release = _release(tmp_path / "release", {"threshold": 0.05, "index": {"fingerprint": "ab" * 32}, "embedder": {"fingerprint": "cd" * 32}})
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    entry = append_release(index_dir, release, command="gate")
    assert entry.threshold == 0.05 and entry.index_fingerprint == "ab" * 32 and entry.embedder_fingerprint == "cd" * 32
    assert sorted(entry.files) == ["audit.csv", "img-0.png", "img-1.png"] and entry.release_path == str(release.resolve())
    check_unchanged(release, entry.files)
    (release / "img-2.png").write_bytes(b"new")
    with pytest.raises(DataSourceError, match="img-2.png: was added"):
        check_unchanged(release, entry.files)
    (release / "img-2.png").unlink()
    (release / "img-1.png").write_bytes(b"changed")
    with pytest.raises(DataSourceError, match="img-1.png: the released file changed"):
        check_unchanged(release, entry.files)
    with pytest.raises(FingerprintMismatchError, match="manifest.json"):
        append_release(index_dir, release, index_fingerprint="ef" * 32)


def test_append_release_reads_the_generate_layout(tmp_path):
    threshold = {"path": "/t.json", "value": 0.07, "embedder_fingerprint": "e" * 64, "index_fingerprint": "i" * 64}
    items = [{"item_id": "img-0", "files": ["img-0.png"]}, {"item_id": "img-1", "files": ["img-1.png"]}]
    release = _release(tmp_path / "release", {"threshold": threshold, "index_fingerprint": "i" * 64, "items": items})
    entry = append_release(tmp_path, release, command="generate")
    assert (entry.threshold, entry.index_fingerprint, entry.embedder_fingerprint) == (0.07, "i" * 64, "e" * 64)
    assert entry.command == "generate" and len(entry.files) == 3


def test_append_release_reads_the_release_layout(tmp_path):
    """A manifest as :class:`monai_pso.release.ReleaseBuilder` writes it: top-level tau and fingerprints, files [{path, item, sha256}]."""
    from monai_pso.io import sha256_file

    release = tmp_path / "release"
    _release(release, {})
    files = [{"path": name, "item": f"r-{k}", "sha256": sha256_file(release / name)} for k, name in enumerate(("img-0.png", "img-1.png"))]
    manifest = {"format": "monai-pso/release/2", "threshold": 0.07, "index_fingerprint": "i" * 64, "embedder_fingerprint": "e" * 64, "files": files}
    (release / "manifest.json").write_text(json.dumps(manifest))
    entry = append_release(tmp_path, release, command="generate")
    assert (entry.threshold, entry.index_fingerprint, entry.embedder_fingerprint) == (0.07, "i" * 64, "e" * 64)
    assert entry.files == {**{f["path"]: f["sha256"] for f in files}, "audit.csv": sha256_file(release / "audit.csv")}
    (release / "img-1.png").write_bytes(b"changed")
    with pytest.raises(DataSourceError, match="img-1.png: the released file changed"):
        append_release(tmp_path, release)
    assert len(verify_ledger(tmp_path)) == 1  # the refused release added no entry


def test_append_release_checks_listed_hashes(tmp_path):
    release = _release(tmp_path / "release", {"threshold": 0.05, "files": {"img-0.png": "0" * 64}})
    with pytest.raises(DataSourceError, match="img-0.png"):
        append_release(tmp_path, release)
    release = _release(tmp_path / "other", {"items": [{"files": ["gone.png"]}]})
    with pytest.raises(DataSourceError, match="gone.png: a released file recorded for this release is missing"):
        append_release(tmp_path, release)
    with pytest.raises(DataSourceError, match="manifest not found"):
        append_release(tmp_path, tmp_path / "index-less")


def test_crash_between_the_two_renames_is_repaired(tmp_path):
    first, _ = _ledger_with(tmp_path, 2)
    (tmp_path / HEAD_FILE).write_text(json.dumps({"entries": 1, "hash": first.hash}))  # ledger renamed, head not yet
    assert len(verify_ledger(tmp_path)) == 2
    third = append_entry(tmp_path, {"command": "gate", "release_path": "/r3"})
    assert json.loads((tmp_path / HEAD_FILE).read_text()) == {"entries": 3, "hash": third.hash}


def test_appends_waiting_while_the_index_is_rebuilt_are_all_kept(tmp_path, monkeypatch):
    """The folder lock lies beside the index, so an append waiting through a rebuild still excludes later ones."""
    import threading
    import time

    from monai_pso.index import storage
    from monai_pso.release import ledger
    from test_index_storage import random_index

    index, _ = random_index(shard_rows=450)
    folder = index.save(tmp_path / "index")
    append_entry(folder, {"command": "gate", "release_path": "/r1"})
    newer, _ = random_index(seed=5, shard_rows=450)
    fsync, verify = storage._fsync_files, ledger.verify_ledger
    monkeypatch.setattr(storage, "_fsync_files", lambda paths: (time.sleep(0.4), fsync(paths)))  # widen the windows
    monkeypatch.setattr(ledger, "verify_ledger", lambda d: (verify(d), time.sleep(0.4))[0])

    rebuild = threading.Thread(target=lambda: newer.save(folder, keep_ledger=True))
    rebuild.start()
    time.sleep(0.1)
    waiting = threading.Thread(target=append_entry, args=(folder, {"command": "gate", "release_path": "/r2"}))
    waiting.start()  # waits for the rebuild's lock
    rebuild.join()
    later = threading.Thread(target=append_entry, args=(folder, {"command": "gate", "release_path": "/r3"}))
    later.start()
    waiting.join()
    later.join()
    monkeypatch.undo()
    assert sorted(e.release_path for e in verify_ledger(folder)) == ["/r1", "/r2", "/r3"]
