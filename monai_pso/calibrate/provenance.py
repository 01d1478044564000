"""What a threshold or a decision belongs to: the saved index and the guard's embedder.

The index's content fingerprint is :attr:`monai_pso.index.ReferenceIndex.fingerprint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai_pso.embed.base import Embedder
from monai_pso.errors import FingerprintMismatchError


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
