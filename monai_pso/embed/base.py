"""The embedder interface: images in, float vectors out, with a fingerprint of weights and settings.

Distances everywhere in monai-pso are Euclidean (L2, not squared) between embedding vectors. An
image may embed to several vectors (the tiles of the pixel embedder's tile mode); the distance from
an image to a set of images is then the smallest distance over all pairs of their vectors, so a single
copied tile is enough to bring an image close. The query side may add views (flips) of the same
image; the distance is again the minimum over them.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_pso.errors import EmbedderSettingsError


@dataclass
class Embedding:
    """Vectors of a batch of images.

    Parameters
    ----------
    vectors
        ``(B, T, D)`` float32: ``T`` vectors per image (tiles and/or views).
    valid
        ``(B, T)`` bool: which of them count (a blank background tile does not); every image keeps
        at least one valid vector.

    Examples
    --------
    >>> e = Embedding.single(np.zeros((2, 8), np.float32))
    >>> e.vectors.shape, e.rows().shape
    ((2, 1, 8), (2, 8))
    """

    vectors: np.ndarray
    valid: np.ndarray

    @classmethod
    def single(cls, vectors: np.ndarray) -> Embedding:
        """One vector per image: ``vectors`` shaped ``(B, D)``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return cls(vectors[:, None, :], np.ones(vectors.shape[:1] + (1,), dtype=bool))

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[-1]

    def rows(self) -> np.ndarray:
        """The valid vectors stacked ``(N_valid, D)``, image by image."""
        return np.ascontiguousarray(self.vectors[self.valid], dtype=np.float32)

    def row_owner(self) -> np.ndarray:
        """For each row of :meth:`rows`, the index of its image in the batch."""
        return np.nonzero(self.valid)[0]

    @classmethod
    def concat(cls, parts: Sequence[Embedding]) -> Embedding:
        """The vectors of several embeddings of the same images side by side (``T`` axes joined).

        Examples
        --------
        >>> a = Embedding.single(np.zeros((2, 4), np.float32))
        >>> Embedding.concat([a, a]).vectors.shape
        (2, 2, 4)
        """
        return cls(np.concatenate([p.vectors for p in parts], axis=1), np.concatenate([p.valid for p in parts], axis=1))


#: Settings that say where weights are stored, not what they are. The fingerprint leaves them out, so
#: an embedder keeps its fingerprint when its weights are saved elsewhere or its folder moves.
LOCATION_KEYS = ("weights", "state_dict_key")


def fingerprint_of(settings: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None) -> str:
    """A sha256 over an embedder's settings and (optionally) weights; any change changes it.

    Examples
    --------
    >>> fingerprint_of({"size": 32}) == fingerprint_of({"size": 32}) != fingerprint_of({"size": 16})
    True
    """
    digest = hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    for name, tensor in sorted((state or {}).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Embedder(ABC):
    """Embed batches of 2D or 3D images, save and load, fingerprint.

    Images passed to :meth:`embed` are float tensors or arrays ``(B, 1, *spatial)`` in ``[0, 1]``
    (records loaded with :func:`monai_pso.data.load_image`); see
    :func:`monai_pso.embed.images.as_image_batch` for what else is accepted.

    Subclasses implement :meth:`embed` and :attr:`settings`; those with weights also
    :meth:`state_dict`. Construction from settings (:meth:`from_settings`) is what
    :func:`monai_pso.embed.embedder_from_settings` and :func:`monai_pso.embed.load_embedder` call.
    """

    #: Registry name (``pixel``, ``latent``, ``reid``); written into manifests.
    name: str = ""

    def __init__(self) -> None:
        #: Where the embedder came from (training source, epochs, seed, validation AUC...); saved with it.
        self.provenance: dict[str, Any] = {}

    @abstractmethod
    def embed(self, images: torch.Tensor | np.ndarray) -> Embedding:
        """Reference-side vectors of a batch."""

    def embed_queries(self, images: torch.Tensor | np.ndarray) -> Embedding:
        """Query-side vectors: by default the same as :meth:`embed`; may add views such as flips."""
        return self.embed(images)

    @property
    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the vectors, JSON-serialisable (includes ``name``; for embedders with
        weights also their location, ``weights``, which the fingerprint leaves out)."""

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The weights that change the vectors (``None``: the embedder has none)."""
        return None

    @property
    def fingerprint(self) -> str:
        """sha256 of :attr:`settings` (less :data:`LOCATION_KEYS`) and weights; changes whenever either changes."""
        identity = {key: value for key, value in self.settings.items() if key not in LOCATION_KEYS}
        return fingerprint_of(identity, self.state_dict())

    @classmethod
    def create(cls, **params: Any) -> Embedder:
        """``cls(**params)``, reporting unknown or missing parameters as :class:`EmbedderSettingsError`."""
        try:
            return cls(**params)
        except TypeError as error:
            raise EmbedderSettingsError(f"{cls.name} embedder: {error}") from None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Embedder:
        """The embedder that :attr:`settings` describe (the default passes them, less ``name``, to :meth:`create`)."""
        return cls.create(**{key: value for key, value in settings.items() if key != "name"})

    def save(self, directory: str | Path) -> Path:
        """Write ``embedder.json`` (and ``weights.pt``) into ``directory``, each file atomically.

        :func:`monai_pso.embed.load_embedder` restores it. Returns the path of ``embedder.json``.
        """
        from monai_pso.embed.persistence import save_embedder

        return save_embedder(self, directory)
