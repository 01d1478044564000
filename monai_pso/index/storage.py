"""Reference index on disk: ``.npy`` arrays per shard, ``items.json`` and a ``manifest.json`` with sha256s.

Layout::

    index/
      manifest.json           format, embedder (name, fingerprint, settings), metric, dim, counts,
                              image shape, source, content fingerprint, created, package version, shards,
                              sha256 of every file
      items.json              {"item_ids": [...], "patient_ids": [...]}
      shard-00000/            vectors.npy row_id.npy row_item.npy norms.npy centroids.npy offsets.npy
                              member_dist.npy projection.npy projected.npy
                              (see monai_pso.index.shard.SHARD_ARRAYS; the manifest lists each shard's
                              rows, row offset and the content digest of every array)
      shard-00001/ ...
      ledger.jsonl, ...       files kept beside the index, e.g. the release ledger (monai_pso.release.ledger)

Writing is atomic: everything goes to a temporary folder beside the target, which is then renamed into
place (an existing index is swapped out and removed only afterwards), so readers never see half an index.
An existing index folder that holds files of its own besides the index (the release ledger of the
releases made against it) is not replaced unless ``keep_ledger=True``, which carries those files into the
new index (the folder lock, :func:`~monai_pso.io.folder_lock`, is held meanwhile, so no ledger append is
lost): the record of what was released from these patients is never dropped by a rebuild.
Reading verifies the sha256 of every file it uses (:class:`IndexIntegrityError` naming the file), the
content digest of every array of every shard it loads against the manifest's (naming the array), the
norms and cluster member distances (hence the radii) against the vectors, the content fingerprint (built
from those digests, so it covers every array a search reads) against the one recorded at save and, given
an embedder, its fingerprint (:class:`FingerprintMismatchError` naming both). An index saved before the
manifest recorded array digests is refused: build it again.

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
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai_pso.errors import FingerprintMismatchError, IndexIntegrityError
from monai_pso.index.shard import SHARD_ARRAYS, Shard
from monai_pso.io import folder_lock, read_json, sha256_file, staged_folder, write_json_atomically

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


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _manifest(index: ReferenceIndex, files: dict[str, str]) -> dict[str, Any]:
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
        "fingerprint": index.fingerprint,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "shards": [
            {"name": shard_folder(i), "rows": s.n_rows, "row_offset": s.row_offset, "clusters": s.n_clusters, "arrays": s.array_digests}
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


def kept_files(directory: str | Path) -> list[str]:
    """Names of the files in an index folder that are not the index's own (the release ledger), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    own = {MANIFEST_NAME, ITEMS_NAME}
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.name not in own and not p.name.startswith("."))


def write_index(index: ReferenceIndex, directory: str | Path, keep_ledger: bool = False) -> Path:
    """Write ``index`` to ``directory`` atomically; returns the folder.

    Refuses a partial index (a subset of shards, as loaded by one process of a distributed group), a
    folder that is not an index, and an index folder holding a release ledger unless ``keep_ledger``
    (then the ledger files are copied into the new index under the ledger lock).
    """
    target = Path(directory).expanduser().absolute()
    if index.n_rows != index.total_rows:
        raise IndexIntegrityError(f"{target}: only {index.n_rows} of {index.total_rows} rows are loaded; cannot save a partial index")
    if target.exists() and not (target / MANIFEST_NAME).is_file() and (not target.is_dir() or any(target.iterdir())):
        raise IndexIntegrityError(f"{target}: exists and is not a reference index; refusing to replace it")
    ledger = kept_files(target)
    if ledger and not keep_ledger:
        raise IndexIntegrityError(
            f"{target}: holds the release ledger of this index ({', '.join(ledger)}), which replacing the index would delete; "
            "pass keep_ledger=True (monai-pso index build --keep-ledger) to carry it into the new index, or save the index elsewhere"
        )
    with folder_lock(target) if ledger else nullcontext(), staged_folder(target) as staged:
        written = [staged / ITEMS_NAME]
        write_json_atomically(written[0], {"item_ids": index.item_ids, "patient_ids": index.patient_ids}, indent=1)
        for number, shard in enumerate(index.shards):
            written += shard.save(staged / shard_folder(number))
        _fsync_files(written)
        files = {path.relative_to(staged).as_posix(): sha256_file(path) for path in written}
        write_json_atomically(staged / MANIFEST_NAME, _manifest(index, files), fsync=True, indent=1, sort_keys=False)
        for name in ledger:
            shutil.copy2(target / name, staged / name)
        _fsync_files([staged / name for name in ledger])
    return target


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of the index in ``directory``, checked for format and self-consistency."""
    path = Path(directory) / MANIFEST_NAME
    manifest = read_json(path, IndexIntegrityError, "index manifest", missing="missing (not a reference index folder, or an incomplete one)")
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


def _check_fingerprint(manifest: dict[str, Any], embedder: Embedder, location: Path) -> None:
    recorded = (manifest.get("embedder") or {}).get("fingerprint")
    if recorded != embedder.fingerprint:
        raise FingerprintMismatchError(
            f"{location}: index built with embedder fingerprint {recorded}, "
            f"given embedder {embedder.name!r} has fingerprint {embedder.fingerprint}"
        )


def read_index(
    directory: str | Path,
    embedder: Embedder | None = None,
    mmap: bool = True,
    backend: str | Backend = "auto",
    shards: Sequence[int] | None = None,
) -> ReferenceIndex:
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
    if any(not isinstance(entry.get("arrays"), dict) for entry in entries):
        raise IndexIntegrityError(
            f"{folder / MANIFEST_NAME}: records no content digests of the shard arrays (saved by an older monai-pso, whose "
            "fingerprint did not cover the arrays a search reads); build the index again (monai-pso index build / guard build)"
        )
    items = read_json(_verify(folder, manifest, ITEMS_NAME), IndexIntegrityError, "index items")
    loaded = []
    for number in numbers:
        entry = entries[number]
        for name in SHARD_ARRAYS:
            _verify(folder, manifest, f"{entry['name']}/{name}.npy")
        shard = Shard.load(folder / entry["name"], int(entry["row_offset"]), mmap=mmap, digests=entry["arrays"])
        if shard.n_rows != entry["rows"] or shard.dim != manifest["dim"]:
            raise IndexIntegrityError(f"{folder / entry['name']}: {shard.n_rows} rows of dimension {shard.dim}, manifest says {entry['rows']} of {manifest['dim']}")
        loaded.append(shard)
    info = manifest.get("embedder")
    recorded = manifest.get("fingerprint")  # absent: computed from the content when asked (whole index only)
    index = ReferenceIndex(
        loaded,
        items["item_ids"],
        items["patient_ids"],
        image_shape=manifest.get("image_shape"),
        embedder=EmbedderInfo(**info) if info else None,
        source=manifest.get("source", str(folder)),
        backend=backend,
        total_rows=manifest["counts"]["rows"],
        manifest=manifest,
        fingerprint=recorded,
    )
    if recorded is not None:
        # the loaded shards' digests equal the manifest's (checked above), so this is their content's fingerprint
        content = index.fingerprint_of_shards(entries)
        if content != recorded:
            raise IndexIntegrityError(f"{folder / MANIFEST_NAME}: the index's content has fingerprint {content[:16]}, the manifest records {recorded[:16]}")
    return index
