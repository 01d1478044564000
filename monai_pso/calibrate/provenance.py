"""What a threshold or a decision belongs to: the index's content fingerprint and the guard's embedder.

The index fingerprint is a sha256 over the index's content (embedder fingerprint, dimension, image
shape, item and patient ids, every shard's rows and their items), so an index built in memory and the
same index saved and loaded again have the same fingerprint, and any change to the rows changes it.

Examples
--------
>>> from monai_pso.index import ReferenceIndex
>>> a = ReferenceIndex.from_vectors(np.eye(2, dtype=np.float32), [0, 1], ["a", "b"], ["p", "q"])
>>> b = ReferenceIndex.from_vectors(2 * np.eye(2, dtype=np.float32), [0, 1], ["a", "b"], ["p", "q"])
>>> index_fingerprint(a) == index_fingerprint(a) != index_fingerprint(b)
True
"""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from monai_pso.embed.base import Embedder
from monai_pso.errors import FingerprintMismatchError

#: Rows hashed per block (bounds memory on memory-mapped shards).
_HASH_ROWS = 1 << 16

_cache: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def index_fingerprint(index: Any) -> str:
    """sha256 of a :class:`~monai_pso.index.ReferenceIndex`'s content (computed once per object)."""
    if index in _cache:
        return _cache[index]
    digest = hashlib.sha256()
    header = {
        "embedder": getattr(index.embedder, "fingerprint", None),
        "dim": int(index.dim),
        "image_shape": list(index.image_shape) if index.image_shape is not None else None,
        "item_ids": list(index.item_ids),
        "patient_ids": list(index.patient_ids),
        "rows": [int(s.n_rows) for s in index.shards],
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for shard in index.shards:
        for start in range(0, shard.n_rows, _HASH_ROWS):
            digest.update(np.ascontiguousarray(shard.vectors[start : start + _HASH_ROWS], np.float32).tobytes())
        digest.update(np.ascontiguousarray(shard.row_item, np.int64).tobytes())
    _cache[index] = fingerprint = digest.hexdigest()
    return fingerprint


def index_manifest_digest(index: Any) -> str | None:
    """The ``manifest_sha256`` of a loaded index (``None`` for an index never saved)."""
    return (getattr(index, "manifest", None) or {}).get("manifest_sha256")


def resolve_embedder(index: Any, embedder: Embedder | None = None, embedder_dir: str | Path | None = None) -> Embedder:
    """The embedder to query ``index`` with: ``embedder``, else the one saved in ``embedder_dir``, else
    the one rebuilt from the settings the index records (embedders without weights, e.g. ``pixel``).

    Raises :class:`~monai_pso.errors.FingerprintMismatchError` unless it is the embedder that built the index.
    """
    if embedder is None and embedder_dir is not None:
        from monai_pso.embed.registry import load_embedder

        embedder = load_embedder(embedder_dir)
    if embedder is None:
        if index.embedder is None:
            raise FingerprintMismatchError(f"{index.source}: the index records no embedder; pass the embedder (or --embedder-dir)")
        from monai_pso.embed.registry import embedder_from_settings

        embedder = embedder_from_settings(dict(index.embedder.settings))
    index.check_embedder(embedder)
    return embedder
