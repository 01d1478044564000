"""Which embedding the audit measures in, and the guard's embedder rebuilt from the index manifest.

The default audit embedding is the pixel embedder on a *different* grid from the guard's default (24
instead of 32 pixels per axis in 2D, 12 instead of 16 in 3D) with lighter smoothing. That makes it a
second, independent measurement of pixel-level closeness, not a semantic one: a pixel embedding sees
copies and near-copies (also shifted by a pixel or two, or re-noised) but not an image that shows the
same anatomy in another pose or contrast. A trained re-identification embedder (``--embedder
path/to/reid``) is the stronger choice when one is available.

Embedder specifications (``--embedder``): a saved embedder folder, or ``NAME`` with optional
``?key=value&...`` settings in the style of SOURCE strings, values read as JSON where they parse
(``pixel?grid=24&smoothing=0.5``, ``pixel?tiles=3``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from monai_pso.embed.base import Embedder
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.errors import MonaiPsoError

#: Grid of the default audit embedding per spatial dimensionality (the guard's default is 32 / 16).
AUDIT_GRID = {2: 24, 3: 12}
#: Smoothing of the default audit embedding (the guard's default is 1.0 grid pixel).
AUDIT_SMOOTHING = 0.5


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_embedder_spec(spec: str) -> Embedder:
    """The embedder a ``--embedder`` specification names.

    Examples
    --------
    >>> parse_embedder_spec("pixel?grid=20&smoothing=0").settings["grid"]
    20
    """
    from monai_pso.embed import create_embedder, load_embedder

    if Path(spec).expanduser().is_dir():
        return load_embedder(Path(spec).expanduser())
    name, _, query = spec.partition("?")
    settings = {key: _value(value) for key, value in parse_qsl(query, keep_blank_values=True)}
    return create_embedder(name.strip(), **settings)


def default_audit_embedder(spatial_dims: int) -> Embedder:
    """The pixel embedder on the audit grid for ``spatial_dims``-D images.

    Examples
    --------
    >>> default_audit_embedder(2).settings["grid"], default_audit_embedder(3).settings["grid"]
    (24, 12)
    """
    return PixelEmbedder(grid=AUDIT_GRID[spatial_dims], smoothing=AUDIT_SMOOTHING)


def guard_identity_embedder(index_dir: str | Path) -> Embedder | None:
    """The identity check's network of the guard folder whose primary index is ``index_dir``
    (``GUARD_DIR/pixel/index``), or ``None`` when that guard has no identity check (or is no guard folder)."""
    from monai_pso.embed.registry import load_embedder
    from monai_pso.guard.folder import GUARD_FILE, read_guard
    from monai_pso.guard.identity import CHECK_NAME

    guard_dir = Path(index_dir).expanduser().resolve().parents[1]
    if not (guard_dir / GUARD_FILE).is_file():
        return None
    entry = next((e for e in read_guard(guard_dir)["checks"] if e["name"] == CHECK_NAME), None)
    return None if entry is None else load_embedder(guard_dir / entry["embedder_dir"], entry["embedder_fingerprint"])


def guard_embedder(settings: dict[str, Any] | None) -> Embedder | None:
    """The guard's embedder rebuilt from the settings in the index manifest, or ``None`` if it cannot be
    (e.g. its weights file is not where the manifest says)."""
    if not settings:
        return None
    from monai_pso.embed import embedder_from_settings

    try:
        return embedder_from_settings(settings)
    except (MonaiPsoError, OSError):
        return None
