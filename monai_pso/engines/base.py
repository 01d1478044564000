"""The shared part of the generative trainers: a ``monai.engines.Trainer`` that reads an image batch,
runs under bf16 autocast where supported and reports a dictionary of losses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.utils import convert_to_tensor

from monai_pso.engines.precision import autocast, resolve_bf16


class GenerativeTrainer(Trainer):
    """Base of :class:`~monai_pso.engines.AutoencoderTrainer` and :class:`~monai_pso.engines.LatentDiffusionTrainer`.

    ``engine.state.output`` is a dictionary (not decollated): ``"image"``, ``"pred"``, ``"loss"`` (a float)
    and one float per loss term, so stock handlers read it with e.g.
    ``output_transform=lambda out: out["loss"]``. Every iteration fires MONAI's ``IterationEvents``
    (``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``, ``MODEL_COMPLETED``).

    Parameters
    ----------
    device
        Where to train.
    max_epochs
        Number of epochs.
    train_data_loader
        Batches of dictionaries holding ``image_key``.
    epoch_length
        Iterations per epoch (default: the loader's length).
    image_key
        Batch key of the images ``(B, 1, *spatial)`` in ``[0, 1]``.
    bf16
        ``"auto"`` (bf16 autocast on CUDA devices that support it), ``True`` or ``False``.
    handlers
        Ignite / MONAI handlers to attach.
    non_blocking
        Asynchronous host-to-device copies.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        epoch_length: int | None = None,
        image_key: str = "image",
        bf16: bool | str = "auto",
        handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            decollate=False,
            handlers=None,
        )
        self.image_key = image_key
        self.use_bf16 = resolve_bf16(self.state.device, bf16)
        self._deferred_handlers = handlers

    def _attach_handlers(self) -> None:
        """Attach the handlers once subclasses have set their state (call at the end of ``__init__``)."""
        if self._deferred_handlers is not None:
            self._register_handlers(self._deferred_handlers)

    def images_of(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The batch's images as a plain float tensor on the engine's device."""
        images = convert_to_tensor(batch[self.image_key], track_meta=False)
        return images.to(self.state.device, dtype=torch.float32, non_blocking=self.non_blocking)

    def autocast(self):
        """bf16 autocast when enabled for this engine, else a no-op context."""
        return autocast(self.state.device, self.use_bf16)

    def keep_in_checkpoint(self, *names: str) -> None:
        """Add ``engine.state`` attributes to ``engine.state_dict()`` (saved by ``CheckpointSaver`` as ``trainer``)."""
        for name in names:
            if name not in self._state_dict_user_keys:
                self._state_dict_user_keys.append(name)
