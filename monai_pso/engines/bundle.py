"""Helpers the bundle configs call: where the bundle is, its datalists, and the modality presets."""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from monai_pso.errors import ConfigurationError

#: Per modality: the intensity preset and default image sizes (2D slices, 3D volumes). ``auto`` keeps
#: each record's own preset (set by its reader: phantom ``none``, DICOM CT ``ct``, ...).
MODALITY_PRESETS: dict[str, dict[str, Any]] = {
    "auto": {"normalize": None, "size_2d": 64, "size_3d": 32},
    "ct": {"normalize": "ct", "size_2d": 256, "size_3d": 128},
    "mri": {"normalize": "mri", "size_2d": 256, "size_3d": 128},
    "pet": {"normalize": "pet", "size_2d": 128, "size_3d": 128},
    "xray": {"normalize": "minmax", "size_2d": 256, "size_3d": None},
}


def bundle_root(default: str | Path | None = None) -> str:
    """The folder of the bundle whose config is being run, whatever the working directory.

    ``python -m monai.bundle run --config_file B/configs/x.json`` runs a ``monai.bundle.ConfigWorkflow``
    that knows its config folder; this returns that folder's parent. Outside a workflow it returns
    ``default`` (or the working directory). ``--bundle_root DIR`` overrides it as in every MONAI bundle.

    Examples
    --------
    >>> bundle_root("/tmp/b")
    '/tmp/b'
    """
    from monai.bundle import ConfigWorkflow

    for frame in inspect.stack(context=0):
        owner = frame.frame.f_locals.get("self")
        if isinstance(owner, ConfigWorkflow):
            root = Path(owner.config_root_path)
            return str((root.parent if root.name == "configs" else root).resolve())
    return str(Path(default).resolve() if default is not None else Path(os.getcwd()))


def image_size(modality: str, spatial_dims: int) -> list[int]:
    """Default training size of ``modality`` in ``spatial_dims`` dimensions.

    Examples
    --------
    >>> image_size("ct", 2), image_size("auto", 3)
    ([256, 256], [32, 32, 32])
    """
    size = preset_of(modality)[f"size_{spatial_dims}d"]
    if size is None:
        raise ConfigurationError(f"modality={modality!r}: has no {spatial_dims}D image size; set image_size in the bundle config")
    return [int(size)] * spatial_dims


def preset_of(modality: str) -> dict[str, Any]:
    """The entry of :data:`MODALITY_PRESETS` (:class:`~monai_pso.errors.ConfigurationError` naming the choices when unknown)."""
    if modality not in MODALITY_PRESETS:
        raise ConfigurationError(f"modality={modality!r}: not one of {', '.join(MODALITY_PRESETS)}")
    return MODALITY_PRESETS[modality]


def datalist(source: str, split: str | None = "train", modality: str = "auto", limit: int | None = None) -> list[dict[str, Any]]:
    """The MONAI datalist of ``split`` of the SOURCE, with the modality's intensity preset applied.

    Examples
    --------
    >>> items = datalist("phantom:2d?patients=4&acquisitions=2&size=16", "train")
    >>> sorted(items[0])[:3], items[0]["normalize"]
    (['acquisition', 'image', 'item_id'], 'none')
    """
    from monai_pso.data import load_source

    records = load_source(source).split(split).records
    normalize = preset_of(modality)["normalize"]
    if normalize is not None:
        records = [replace(r, normalize=normalize, modality=modality) for r in records]
    entries = [r.to_dict() for r in records]
    return entries[:limit] if limit else entries


def weights_file(output_dir: str | Path, root: str | Path, name: str = "model.pt") -> str:
    """The checkpoint a downstream bundle's ``inference.json`` loads: ``OUTPUT_DIR/NAME`` when a training run
    of its ``train.json`` wrote one there, else the small weights shipped in the bundle (``ROOT/models/NAME``).

    The choice is logged; ``--checkpoint PATH`` overrides it.

    Examples
    --------
    >>> weights_file("/no/such/run", "/b")
    '/b/models/model.pt'
    """
    trained = Path(output_dir) / name
    chosen = trained if trained.is_file() else Path(root) / "models" / name
    logging.getLogger(__name__).info("inference loads %s (%s)", chosen, "this run's training" if chosen == trained else "the weights shipped in the bundle")
    return str(chosen)
