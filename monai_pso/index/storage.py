"""Reference index on disk: ``.npy`` arrays per shard, ``items.json`` and a ``manifest.json`` with sha256s.

Layout::

    index/
      manifest.json           format, embedder (name, fingerprint, settings), metric, dim, counts,
                              image shape, source, created, package version, shards, sha256 of every file
      items.json              {"item_ids": [...], "patient_ids": [...]}
      shard-00000/            vectors.npy row_id.npy row_item.npy norms.npy centroids.npy offsets.npy
                              member_dist.npy   (see monai_pso.index.shard.SHARD_ARRAYS)
      shard-00001/ ...

Writing is atomic: everything goes to a temporary folder beside the target, which is then renamed into
place (an existing index is swapped out and removed only afterwards), so readers never see half an index.
Reading verifies the sha256 of every file it uses (:class:`IndexIntegrityError` naming the file) and,
given an embedder, its fingerprint (:class:`FingerprintMismatchError` naming both).

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> from monai_pso.index.reference import ReferenceIndex
>>> index = ReferenceIndex.from_vectors(np.eye(4, dtype=np.float32), [0, 1, 2, 3], list("abcd"), list("ppqq"))
>>> folder = write_index(index, Path(tempfile.mkdtemp()) / "index")
>>> sorted(p.name for p in folder.iterdir())
['items.json', 'manifest.json', 'shard-00000']
>>> read_index(folder).n_rows
4
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai_pso.errors import FingerprintMismatchError, IndexIntegrityError
from monai_pso.index.shard import SHARD_ARRAYS, Shard

if TYPE_CHECKING:
    from monai_pso.embed.base import Embedder
    from monai_pso.index.backends import Backend
    from monai_pso.index.reference import ReferenceIndex

FORMAT = "monai-pso-reference-index"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ITEMS_NAME = "items.json"


def shard_folder(number: int) -> str:
    """Folder name of shard ``number``: ``shard-00000``."""
    return f"shard-{number:05d}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_json(path: Path, payload: Any) -> None:
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _manifest(index: "ReferenceIndex", files: dict[str, str]) -> dict[str, Any]:
    from monai_pso import __version__

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metric": "l2",
        "distance": "canonical: sqrt(sum((float64(q) - float64(r))**2)) of float32 vectors",
        "dim": index.dim,
        "counts": {
            "rows": index.n_rows,
            "items": index.n_items,
            "patients": index.n_patients,
            "shards": len(index.shards),
            "clusters": sum(s.n_clusters for s in index.shards),
        },
        "image_shape": list(index.image_shape) if index.image_shape is not None else None,
        "embedder": index.embedder.to_dict() if index.embedder is not None else None,
        "source": index.source,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "shards": [
            {"name": shard_folder(i), "rows": s.n_rows, "row_offset": s.row_offset, "clusters": s.n_clusters}
            for i, s in enumerate(index.shards)
        ],
        "files": files,
    }
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    return manifest


def _fsync_files(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _replace(target: Path, staged: Path) -> None:
    """Rename ``staged`` to ``target``; an existing index at ``target`` is swapped out, then removed."""
    if not target.exists():
        os.rename(staged, target)
        return
    if not (target / MANIFEST_NAME).is_file() and any(target.iterdir()):
        raise IndexIntegrityError(f"{target}: exists and is not a reference index; refusing to replace it")
    retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, retired)
    os.rename(staged, target)
    shutil.rmtree(retired, ignore_errors=True)


def write_index(index: "ReferenceIndex", directory: str | Path) -> Path:
    """Write ``index`` to ``directory`` atomically; returns the folder.

    Refuses a partial index (a subset of shards, as loaded by one process of a distributed group).
    """
    target = Path(directory).expanduser().absolute()
    if index.n_rows != index.total_rows:
        raise IndexIntegrityError(f"{target}: only {index.n_rows} of {index.total_rows} rows are loaded; cannot save a partial index")
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        written = [staged / ITEMS_NAME]
        _write_json(written[0], {"item_ids": index.item_ids, "patient_ids": index.patient_ids})
        for number, shard in enumerate(index.shards):
            written += shard.save(staged / shard_folder(number))
        _fsync_files(written)
        files = {path.relative_to(staged).as_posix(): sha256_file(path) for path in written}
        _write_json(staged / MANIFEST_NAME, _manifest(index, files))
        _replace(target, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return target


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of the index in ``directory``, checked for format and self-consistency."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise IndexIntegrityError(f"{path}: missing (not a reference index folder, or an incomplete one)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise IndexIntegrityError(f"{path}: cannot be read ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexIntegrityError(f"{path}: not a monai-pso reference index manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexIntegrityError(f"{path}: format version {manifest.get('format_version')}, this version reads {FORMAT_VERSION}")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise IndexIntegrityError(f"{path}: the manifest was modified (its sha256 does not match)")
    if manifest["counts"]["rows"] < 1:
        raise IndexIntegrityError(f"{path}: the index holds no reference rows")
    return manifest


def _verify(directory: Path, manifest: dict[str, Any], relative: str) -> Path:
    path = directory / relative
    expected = manifest["files"].get(relative)
    if expected is None:
        raise IndexIntegrityError(f"{path}: not listed in {MANIFEST_NAME}")
    if not path.is_file():
        raise IndexIntegrityError(f"{path}: missing")
    if sha256_file(path) != expected:
        raise IndexIntegrityError(f"{path}: sha256 mismatch (corrupted or modified)")
    return path


def _check_fingerprint(manifest: dict[str, Any], embedder: "Embedder", location: Path) -> None:
    recorded = (manifest.get("embedder") or {}).get("fingerprint")
    if recorded != embedder.fingerprint:
        raise FingerprintMismatchError(
            f"{location}: index built with embedder fingerprint {recorded}, "
            f"given embedder {embedder.name!r} has fingerprint {embedder.fingerprint}"
        )


def read_index(
    directory: str | Path,
    embedder: "Embedder | None" = None,
    mmap: bool = True,
    backend: "str | Backend" = "auto",
    shards: Sequence[int] | None = None,
) -> "ReferenceIndex":
    """Load the index in ``directory`` (see :meth:`ReferenceIndex.load`)."""
    from monai_pso.index.reference import EmbedderInfo, ReferenceIndex

    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise IndexIntegrityError(f"{folder}: no such reference index folder")
    manifest = read_manifest(folder)
    if embedder is not None:
        _check_fingerprint(manifest, embedder, folder)
    entries = manifest["shards"]
    numbers = range(len(entries)) if shards is None else sorted(set(int(n) for n in shards))
    if any(not 0 <= n < len(entries) for n in numbers):
        raise IndexIntegrityError(f"{folder}: holds {len(entries)} shards, asked for {list(numbers)}")
    items = json.loads(_verify(folder, manifest, ITEMS_NAME).read_text())
    loaded = []
    for number in numbers:
        entry = entries[number]
        for name in SHARD_ARRAYS:
            _verify(folder, manifest, f"{entry['name']}/{name}.npy")
        shard = Shard.load(folder / entry["name"], int(entry["row_offset"]), mmap=mmap)
        if shard.n_rows != entry["rows"] or shard.dim != manifest["dim"]:
            raise IndexIntegrityError(f"{folder / entry['name']}: {shard.n_rows} rows of dimension {shard.dim}, manifest says {entry['rows']} of {manifest['dim']}")
        loaded.append(shard)
    info = manifest.get("embedder")
    return ReferenceIndex(
        loaded,
        items["item_ids"],
        items["patient_ids"],
        image_shape=manifest.get("image_shape"),
        embedder=EmbedderInfo(**info) if info else None,
        source=manifest.get("source", str(folder)),
        backend=backend,
        total_rows=manifest["counts"]["rows"],
        manifest=manifest,
    )
