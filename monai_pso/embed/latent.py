"""The ``latent`` embedder: where the latent-diffusion autoencoder puts an image.

The vector is the mean of the posterior, ``z_mu`` of :meth:`monai.networks.nets.AutoencoderKL.encode`
(not :meth:`~monai.networks.nets.AutoencoderKL.encode_stage_2_inputs`, which adds sampling noise and
would give a different vector each call), flattened and divided by ``sqrt(number of latent values)``:
the L2 distance is the RMS difference of the two latent means, comparable across latent sizes like
the pixel embedder's. Images are resampled to ``input_size`` when given; otherwise they must have a
shape the autoencoder takes (each side divisible by ``2 ** (len(channels) - 1)``).

Examples
--------
>>> import numpy as np
>>> from monai.networks.nets import AutoencoderKL
>>> kwargs = dict(spatial_dims=2, channels=(8, 8), latent_channels=2, num_res_blocks=1,
...               attention_levels=(False, False), norm_num_groups=4)
>>> embedder = LatentEmbedder(AutoencoderKL(**kwargs), network=kwargs)
>>> embedder.embed(np.random.rand(2, 1, 16, 16)).vectors.shape  # 2 channels x 8 x 8
(2, 1, 128)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL

from monai_pso.embed.images import spatial_shape
from monai_pso.embed.network import NetworkEmbedder
from monai_pso.embed.pixel import rms_scaled
from monai_pso.errors import EmbedderSettingsError


class LatentEmbedder(NetworkEmbedder):
    """Latent means of a MONAI ``AutoencoderKL`` (2D or 3D), RMS-scaled.

    Parameters
    ----------
    autoencoder
        The autoencoder module; when ``None``, one is built from ``network`` and loaded from ``weights``.
    network
        The ``AutoencoderKL`` keyword arguments (``spatial_dims``, ``channels``, ...). Required to
        build from a checkpoint, and to save (so that the embedder can be rebuilt).
    weights
        Checkpoint path (a state dict saved with ``torch.save``; read with ``weights_only=True``).
    state_dict_key
        Entry of the checkpoint holding the autoencoder's state dict (e.g. ``"autoencoder"``; dotted
        for deeper nesting), ``None`` when the file is the state dict itself.
    input_size
        Resample images to this shape first (int or one per axis); ``None``: use them as they are.
    flip_axes, device, batch_size
        As in :class:`~monai_pso.embed.network.NetworkEmbedder`.

    Examples
    --------
    >>> kwargs = dict(spatial_dims=3, channels=(4, 4), latent_channels=1, num_res_blocks=1,
    ...               attention_levels=(False, False), norm_num_groups=2)
    >>> LatentEmbedder(AutoencoderKL(**kwargs), network=kwargs).settings["network"]["spatial_dims"]
    3
    """

    name = "latent"

    def __init__(
        self,
        autoencoder: AutoencoderKL | None = None,
        *,
        network: Mapping[str, Any] | None = None,
        weights: str | Path | None = None,
        state_dict_key: str | None = None,
        input_size: int | Sequence[int] | None = None,
        flip_axes: Sequence[int] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        self.network_kwargs = None if network is None else _json_ready(network)
        if autoencoder is None:
            if self.network_kwargs is None or weights is None:
                raise EmbedderSettingsError("latent embedder: pass an autoencoder module, or network (AutoencoderKL arguments) and weights")
            try:
                autoencoder = AutoencoderKL(**self.network_kwargs)
            except (TypeError, ValueError) as error:
                raise EmbedderSettingsError(f"latent embedder: network={self.network_kwargs}: {error}") from None
        spatial_dims = int(autoencoder.encoder.spatial_dims)
        size = None if input_size is None else spatial_shape(input_size, spatial_dims, "input_size")
        super().__init__(autoencoder, spatial_dims, size, flip_axes, weights, state_dict_key, device, batch_size)

    @property
    def network_settings(self) -> dict[str, Any]:
        return {"network": self.network_kwargs}

    def forward_vectors(self, batch: torch.Tensor) -> torch.Tensor:
        z_mu, _ = self.network.encode(batch)
        return rms_scaled(z_mu.flatten(1))

    def save(self, directory: str | Path) -> Path:
        if self.network_kwargs is None:
            raise EmbedderSettingsError("latent embedder: cannot save without network (the AutoencoderKL arguments that rebuild it)")
        return super().save(directory)


def _json_ready(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """AutoencoderKL arguments with tuples as lists, as they come back from JSON (stable fingerprints)."""
    return {str(k): list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
