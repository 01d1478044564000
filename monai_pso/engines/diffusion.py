"""Stage 2 of a latent diffusion model: train a MONAI ``DiffusionModelUNet`` on frozen-autoencoder latents."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from monai.engines.utils import IterationEvents
from monai.networks.schedulers import Scheduler
from monai.utils.enums import CommonKeys as Keys
from torch.optim.swa_utils import AveragedModel

from monai_pso.engines.base import GenerativeTrainer
from monai_pso.engines.conditioning import Conditioning
from monai_pso.engines.latents import LatentCache, latent_scale_factor, unwrap
from monai_pso.engines.schedules import diffusion_target, training_timesteps


class LatentDiffusionTrainer(GenerativeTrainer):
    """Train the diffusion UNet of a latent diffusion model (DDPM or rectified flow), optionally conditioned.

    Each iteration encodes the images with the frozen autoencoder (or reads the latent cache), scales the
    latents by ``engine.state.scale_factor`` (``1/std`` of the first batch's latents unless given), adds
    noise at random timesteps, and regresses the scheduler's target (:func:`~monai_pso.engines.schedules.diffusion_target`).
    With a condition, each item's condition is replaced by the null condition with probability
    ``cfg_dropout`` (classifier-free guidance). ``engine.state.scale_factor`` is part of ``engine.state_dict()``,
    so a ``CheckpointSaver`` given ``{"trainer": trainer}`` keeps it (see :func:`~monai_pso.engines.read_scale_factor`).

    Parameters
    ----------
    device, max_epochs, train_data_loader, epoch_length, image_key, bf16, handlers, non_blocking
        See :class:`~monai_pso.engines.base.GenerativeTrainer`.
    unet
        ``monai.networks.nets.DiffusionModelUNet`` (possibly DDP-wrapped).
    optimizer
        Optimizer of the UNet.
    autoencoder
        Trained ``AutoencoderKL``; frozen here.
    noise_scheduler
        ``DDPMScheduler`` (epsilon, v or sample prediction) or ``RFlowScheduler``.
    scale_factor
        Latent scale; ``None`` computes it from the first batch.
    conditioning
        A :class:`~monai_pso.engines.Conditioning` (``None``: unconditional).
    cfg_dropout
        Probability of dropping an item's condition.
    ema
        An EMA model (:func:`~monai_pso.engines.ema_of`) updated after every step, or ``None``.
    cache_latents
        Encode each ``item_id`` once (:class:`~monai_pso.engines.latents.LatentCache`).
    loss_function
        Regression loss (default MSE).

    Examples
    --------
    >>> from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
    >>> from monai.networks.schedulers import DDPMScheduler
    >>> ae = AutoencoderKL(2, 1, 1, channels=(8, 8), latent_channels=2, num_res_blocks=1, norm_num_groups=4,
    ...                    attention_levels=(False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    >>> unet = DiffusionModelUNet(2, 2, 2, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=4)
    >>> trainer = LatentDiffusionTrainer("cpu", 1, [{"image": torch.rand(2, 1, 16, 16)}], unet,
    ...                                  torch.optim.Adam(unet.parameters()), ae, DDPMScheduler(100))
    >>> trainer.run(); trainer.state.scale_factor > 0
    True
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        unet: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        autoencoder: torch.nn.Module,
        noise_scheduler: Scheduler,
        scale_factor: float | None = None,
        conditioning: Conditioning | None = None,
        cfg_dropout: float = 0.1,
        ema: AveragedModel | None = None,
        cache_latents: bool = False,
        loss_function: torch.nn.Module | None = None,
        epoch_length: int | None = None,
        image_key: str = "image",
        bf16: bool | str = "auto",
        handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, epoch_length, image_key, bf16, handlers, non_blocking)
        self.unet = unet
        self.optimizer = optimizer
        self.autoencoder = unwrap(autoencoder).eval().requires_grad_(False)
        self.noise_scheduler = noise_scheduler
        self.conditioning = conditioning or Conditioning()
        self.cfg_dropout = cfg_dropout if self.conditioning.mode is not None else 0.0
        self.ema = ema
        self.latent_cache = LatentCache() if cache_latents else None
        self.loss_function = loss_function or torch.nn.MSELoss()
        self.state.scale_factor = None if scale_factor is None else float(scale_factor)
        self.keep_in_checkpoint("scale_factor")
        self._attach_handlers()

    @torch.no_grad()
    def _posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            mu, sigma = self.autoencoder.encode(images)
        return mu.float(), sigma.float()

    def latents_of(self, batch: dict, images: torch.Tensor) -> torch.Tensor:
        """Unscaled latent samples of a batch (through the cache when enabled)."""
        if self.latent_cache is not None and "item_id" in batch:
            return self.latent_cache.latents(list(batch["item_id"]), images, self._posterior)
        mu, sigma = self._posterior(images)
        return mu + sigma * torch.randn_like(sigma)

    def _iteration(self, engine: LatentDiffusionTrainer, batchdata: dict) -> dict:
        images = engine.images_of(batchdata)
        latents = engine.latents_of(batchdata, images)
        if engine.state.scale_factor is None:
            engine.state.scale_factor = latent_scale_factor(latents)
        latents = latents * engine.state.scale_factor
        condition = engine.conditioning.dropout(engine.conditioning.from_batch(batchdata, latents.device), engine.cfg_dropout)
        noise = torch.randn_like(latents)
        timesteps = training_timesteps(engine.noise_scheduler, latents)
        noisy = engine.noise_scheduler.add_noise(original_samples=latents, noise=noise, timesteps=timesteps)
        engine.unet.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with engine.autocast():
            prediction = engine.unet(x=noisy, timesteps=timesteps, **engine.conditioning.unet_kwargs(condition))
        engine.state.output = {Keys.IMAGE: images, Keys.PRED: prediction}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = engine.loss_function(prediction.float(), diffusion_target(engine.noise_scheduler, latents, noise, timesteps))
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        if engine.ema is not None:
            engine.ema.update_parameters(engine.unet)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output[Keys.LOSS] = float(loss.detach())
        return engine.state.output
