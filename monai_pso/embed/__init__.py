"""Embedders: images -> vectors whose Euclidean distances the privacy guard thresholds.

- ``pixel`` (:class:`PixelEmbedder`): resampled intensities, RMS distances; global or tiled.
- ``reid`` (:class:`ReidEmbedder`): a re-identification network trained contrastively
  (:func:`train_reid`, ``monai-pso embed train``).
- ``latent`` (:class:`LatentEmbedder`): the latent mean of the LDM's ``AutoencoderKL``.
- ``fidelity`` (:class:`FidelityEmbedder`): texture, edge and intensity statistics of a fixed random
  network: does an image look like real data?
- ``aligned`` (:class:`AlignedEmbedder`): equalised pixels of the central field (or of windows), the
  query aligned over a grid of shifts, turns and zooms: the guard's copy checks.

See ``docs/embedders.md`` for the exact distances and when to use which.
"""

from monai_pso.embed.aligned import AlignedEmbedder
from monai_pso.embed.base import Embedder, Embedding, fingerprint_of
from monai_pso.embed.distance import image_distances
from monai_pso.embed.fidelity import FidelityEmbedder
from monai_pso.embed.latent import LatentEmbedder
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.embed.registry import EMBEDDERS, create_embedder, embedder_from_settings, load_embedder
from monai_pso.embed.reid import ReidEmbedder
from monai_pso.embed.reid_training import train_reid
from monai_pso.embed.verification import verification_auc
from monai_pso.errors import EmbedderSettingsError

__all__ = [
    "EMBEDDERS",
    "AlignedEmbedder",
    "Embedder",
    "EmbedderSettingsError",
    "Embedding",
    "FidelityEmbedder",
    "LatentEmbedder",
    "PixelEmbedder",
    "ReidEmbedder",
    "create_embedder",
    "embedder_from_settings",
    "fingerprint_of",
    "image_distances",
    "load_embedder",
    "train_reid",
    "verification_auc",
]
