"""An embedder on disk: ``embedder.json`` (settings, fingerprint, provenance) and ``weights.pt``.

Layout of a saved embedder folder::

    embedder.json   {"format": 1, "name", "settings", "fingerprint", "provenance", "monai_pso_version"}
    weights.pt      torch.save of the state dict (embedders with weights only), loadable with
                    torch.load(..., weights_only=True)

Each file is written to a temporary name in the folder and renamed into place, weights first, so a
reader never sees half a file, and ``embedder.json`` (which names the fingerprint of the weights it
goes with) appears last. In ``embedder.json`` the ``weights`` setting is relative to the folder.

Examples
--------
>>> import tempfile
>>> from monai_pso.embed.pixel import PixelEmbedder
>>> folder = tempfile.mkdtemp()
>>> _ = save_embedder(PixelEmbedder(grid=16), folder)
>>> read_embedder_json(folder)["settings"]["grid"]
16
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_pso import __version__
from monai_pso.embed.base import Embedder
from monai_pso.errors import DataSourceError
from monai_pso.io import read_json, write_atomically, write_json_atomically

SETTINGS_FILE = "embedder.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 1


def save_embedder(embedder: Embedder, directory: str | Path) -> Path:
    """Write ``embedder`` into ``directory`` (created if needed); returns the path of ``embedder.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings = dict(embedder.settings)
    state = embedder.state_dict()
    if state is not None:
        write_atomically(directory / WEIGHTS_FILE, lambda stream: torch.save({k: v.detach().cpu() for k, v in state.items()}, stream))
        settings.update(weights=WEIGHTS_FILE, state_dict_key=None)
    document = {
        "format": FORMAT_VERSION,
        "name": embedder.name,
        "settings": settings,
        "fingerprint": embedder.fingerprint,
        "provenance": embedder.provenance,
        "monai_pso_version": __version__,
    }
    write_json_atomically(directory / SETTINGS_FILE, document, default=str, allow_nan=True)
    return directory / SETTINGS_FILE


def read_embedder_json(directory: str | Path) -> dict[str, Any]:
    """The parsed ``embedder.json`` of a saved embedder folder, its ``weights`` setting made absolute."""
    path = Path(directory) / SETTINGS_FILE
    document = read_json(path, what="saved embedder", missing="no saved embedder here (embedder.json missing)")
    if not isinstance(document, dict) or not {"name", "settings", "fingerprint"} <= set(document):
        raise DataSourceError(path, "not an embedder.json (needs name, settings and fingerprint)")
    weights = document["settings"].get("weights")
    if weights is not None:
        document["settings"]["weights"] = str((path.parent / weights).resolve())
    return document


def load_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, read with ``weights_only=True``.

    Parameters
    ----------
    path
        The checkpoint file.
    key
        Where the state dict sits in a nested checkpoint (``"autoencoder"``, or a dotted path such as
        ``"model.autoencoder"``); ``None`` when the file is the state dict itself.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataSourceError(path, "weights file not found") from None
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise DataSourceError(path, f"cannot read weights: {error}") from None
    for part in key.split(".") if key else ():
        if not isinstance(checkpoint, Mapping) or part not in checkpoint:
            keys = ", ".join(sorted(map(str, checkpoint)))[:200] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
            raise DataSourceError(path, f"no entry {part!r} for state_dict_key={key!r} (found: {keys})")
        checkpoint = checkpoint[part]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise DataSourceError(path, "does not hold a state dict of tensors (set state_dict_key to the entry that does)")
    return dict(checkpoint)
