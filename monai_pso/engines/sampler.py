"""Sampling a latent diffusion model: DDPM, DDIM or rectified flow, with classifier-free guidance,
deterministic per sample, decoded through the autoencoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler, Scheduler

from monai_pso.engines.conditioning import Conditioning
from monai_pso.engines.latents import unwrap
from monai_pso.engines.precision import autocast, resolve_bf16
from monai_pso.engines.schedules import is_rectified_flow


class LatentDiffusionSampler:
    """Draw images from a trained latent diffusion model.

    Sample ``i`` depends only on its own seed (and condition, guidance and steps), never on the batch it
    is drawn in: its initial noise and every stochastic step use a ``torch.Generator`` seeded with it, and
    the scheduler steps run item by item (the UNet runs batched). ``guidance_scale`` ``w`` combines the
    conditional and null predictions as ``uncond + w * (cond - uncond)``; ``w = 1`` skips the null pass.

    MONAI's ``LatentDiffusionInferer.sample`` draws one noise tensor for the batch, has no classifier-free
    guidance and no class labels, hence this loop (same schedulers, same networks).

    Parameters
    ----------
    autoencoder
        Trained ``AutoencoderKL``.
    unet
        Trained ``DiffusionModelUNet`` (e.g. the EMA's ``.module``).
    scheduler
        ``DDIMScheduler`` or ``DDPMScheduler`` (with the training schedule), or ``RFlowScheduler``.
    scale_factor
        Latent scale used in training.
    latent_shape
        ``(channels, *spatial)`` of one latent.
    num_inference_steps
        Denoising steps.
    guidance_scale
        Default CFG scale.
    conditioning
        The training :class:`~monai_pso.engines.Conditioning`.
    eta
        DDIM stochasticity (0: deterministic DDIM).
    device
        Where to sample (default: the UNet's device).
    bf16
        bf16 autocast where supported.

    Examples
    --------
    >>> from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
    >>> from monai.networks.schedulers import DDIMScheduler
    >>> ae = AutoencoderKL(2, 1, 1, channels=(8, 8), latent_channels=2, num_res_blocks=1, norm_num_groups=4,
    ...                    attention_levels=(False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    >>> unet = DiffusionModelUNet(2, 2, 2, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=4)
    >>> sampler = LatentDiffusionSampler(ae, unet, DDIMScheduler(100), 1.0, (2, 8, 8), num_inference_steps=3)
    >>> a, b = sampler([7, 8]), sampler([8])
    >>> tuple(a.shape), bool(torch.allclose(a[1], b[0], atol=1e-5))
    ((2, 1, 16, 16), True)
    """

    def __init__(
        self,
        autoencoder: torch.nn.Module,
        unet: torch.nn.Module,
        scheduler: Scheduler,
        scale_factor: float,
        latent_shape: Sequence[int],
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        conditioning: Conditioning | None = None,
        eta: float = 0.0,
        device: torch.device | str | None = None,
        bf16: bool | str = "auto",
    ) -> None:
        self.autoencoder = unwrap(autoencoder).eval()
        self.unet = unwrap(unet).eval()
        self.scheduler = scheduler
        self.scale_factor = float(scale_factor)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.conditioning = conditioning or Conditioning()
        self.eta = float(eta)
        self.device = torch.device(device) if device is not None else next(self.unet.parameters()).device
        self.use_bf16 = resolve_bf16(self.device, bf16)

    def initial_noise(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Each sample's starting noise and its generator (on the sampling device), from its seed alone."""
        generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in seeds]
        noise = torch.stack([torch.randn(self.latent_shape, generator=g, device=self.device) for g in generators])
        return noise, generators

    def _timesteps(self) -> list[tuple[Any, Any]]:
        """(t, next t) pairs of the inference schedule."""
        if is_rectified_flow(self.scheduler):
            numel = int(torch.tensor(self.latent_shape[1:]).prod())
            self.scheduler.set_timesteps(self.num_inference_steps, device=self.device, input_img_size_numel=numel)
        else:
            self.scheduler.set_timesteps(self.num_inference_steps, device=self.device)
        steps = list(self.scheduler.timesteps)
        return list(zip(steps, steps[1:] + [torch.zeros_like(steps[0])]))

    def _predict(self, latents: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None, scale: float) -> torch.Tensor:
        timesteps = t.expand(latents.shape[0]).to(self.device)
        guided = condition is not None and scale != 1.0
        x = torch.cat([latents, latents]) if guided else latents
        kwargs = self.conditioning.unet_kwargs(torch.cat([self.conditioning.null_like(condition), condition]) if guided else condition)
        with autocast(self.device, self.use_bf16):
            out = self.unet(x=x, timesteps=torch.cat([timesteps, timesteps]) if guided else timesteps, **kwargs).float()
        if not guided:
            return out
        uncond, cond = out.chunk(2)
        return uncond + scale * (cond - uncond)

    def _step(self, output: torch.Tensor, t: torch.Tensor, next_t: torch.Tensor, sample: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One scheduler step for one item (a batch of one) with its own generator."""
        if is_rectified_flow(self.scheduler):
            return self.scheduler.step(output, t, sample, next_t)[0]
        if isinstance(self.scheduler, DDIMScheduler):
            return self.scheduler.step(output, t, sample, eta=self.eta, generator=generator)[0]
        return self.scheduler.step(output, t, sample, generator=generator)[0]

    @torch.no_grad()
    def __call__(self, seeds: Sequence[int], condition: Any = None, guidance_scale: float | None = None) -> torch.Tensor:
        """Images ``(B, 1, *spatial)`` in ``[0, 1]``, one per seed.

        Parameters
        ----------
        seeds
            One integer per sample.
        condition
            Class labels ``(B,)`` or context ``(B, D)`` / ``(B, T, D)``; ``None`` when unconditional.
        guidance_scale
            CFG scale for this call (default: the sampler's).
        """
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        prepared = self.conditioning.prepare(condition, self.device)
        latents, generators = self.initial_noise(seeds)
        for t, next_t in self._timesteps():
            output = self._predict(latents, t, prepared, scale)
            latents = torch.cat(
                [self._step(output[i : i + 1], t, next_t, latents[i : i + 1], g) for i, g in enumerate(generators)]
            )
        with autocast(self.device, self.use_bf16):
            images = self.autoencoder.decode_stage_2_outputs(latents / self.scale_factor).float()
        return images.clamp(0.0, 1.0)
