"""Embedders by name: create one, rebuild one from manifest settings, load a saved one.

Examples
--------
>>> embedder = create_embedder("pixel", tiles=3)
>>> rebuilt = embedder_from_settings(embedder.settings, expected_fingerprint=embedder.fingerprint)
>>> rebuilt.settings == embedder.settings
True
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_pso.embed.aligned import AlignedEmbedder
from monai_pso.embed.base import Embedder
from monai_pso.embed.fidelity import FidelityEmbedder
from monai_pso.embed.latent import LatentEmbedder
from monai_pso.embed.persistence import SETTINGS_FILE, read_embedder_json
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.embed.reid import ReidEmbedder
from monai_pso.errors import EmbedderSettingsError, FingerprintMismatchError

#: Every embedder class by its registry name.
EMBEDDERS: dict[str, type[Embedder]] = {cls.name: cls for cls in (PixelEmbedder, ReidEmbedder, LatentEmbedder, FidelityEmbedder, AlignedEmbedder)}


def embedder_class(name: str) -> type[Embedder]:
    """The class registered as ``name``; raises :class:`EmbedderSettingsError` listing the known names."""
    try:
        return EMBEDDERS[name]
    except KeyError:
        raise EmbedderSettingsError(f"unknown embedder {name!r} (known: {', '.join(sorted(EMBEDDERS))})") from None


def create_embedder(name: str, **settings: Any) -> Embedder:
    """A new embedder: ``create_embedder("pixel", grid=16)``, ``create_embedder("reid", spatial_dims=3)``.

    Examples
    --------
    >>> create_embedder("pixel", grid=16).settings["grid"]
    16
    """
    return embedder_class(name).create(**settings)


def embedder_from_settings(settings: Mapping[str, Any], expected_fingerprint: str | None = None) -> Embedder:
    """The embedder that an index manifest's ``embedder.settings`` describe.

    Parameters
    ----------
    settings
        :attr:`Embedder.settings` as stored (``name`` included; for ``reid`` and ``latent`` the
        ``weights`` path).
    expected_fingerprint
        When given, the rebuilt embedder must have it, else
        :class:`~monai_pso.errors.FingerprintMismatchError` (weights changed since the manifest).
    """
    if "name" not in settings:
        raise EmbedderSettingsError("embedder settings have no 'name'")
    embedder = embedder_class(settings["name"]).from_settings(settings)
    _check_fingerprint(embedder, expected_fingerprint, "embedder settings")
    return embedder


def load_embedder(directory: str | Path, expected_fingerprint: str | None = None) -> Embedder:
    """The embedder saved in ``directory`` by :meth:`Embedder.save`, with its provenance.

    Raises :class:`~monai_pso.errors.FingerprintMismatchError` when the weights there are not the
    ones ``embedder.json`` was written for, or differ from ``expected_fingerprint``.
    """
    document = read_embedder_json(directory)
    embedder = embedder_class(document["name"]).from_settings(document["settings"])
    embedder.provenance = dict(document.get("provenance") or {})
    _check_fingerprint(embedder, document["fingerprint"], Path(directory) / SETTINGS_FILE)
    _check_fingerprint(embedder, expected_fingerprint, Path(directory) / SETTINGS_FILE)
    return embedder


def _check_fingerprint(embedder: Embedder, expected: str | None, where: str | Path) -> None:
    if expected is not None and embedder.fingerprint != expected:
        raise FingerprintMismatchError(f"{where}: the {embedder.name} embedder has fingerprint {embedder.fingerprint[:12]}…, expected {expected[:12]}…")


def resolve_embedder(index: Any, embedder: Embedder | None = None, embedder_dir: str | Path | None = None) -> Embedder:
    """The embedder to query ``index`` with: ``embedder``, else the one saved in ``embedder_dir``, else
    the one rebuilt from the settings the index records (embedders without weights, e.g. ``pixel``).

    Raises :class:`~monai_pso.errors.FingerprintMismatchError` unless it is the embedder that built the index.
    """
    if embedder is None and embedder_dir is not None:
        embedder = load_embedder(embedder_dir)
    if embedder is None:
        if index.embedder is None:
            raise FingerprintMismatchError(f"{index.source}: the index records no embedder; pass the embedder (or --embedder-dir)")
        embedder = embedder_from_settings(dict(index.embedder.settings))
    index.check_embedder(embedder)
    return embedder
