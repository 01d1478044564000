"""What the UNet learns to predict and which timesteps it trains on, for each MONAI noise scheduler."""

from __future__ import annotations

import torch
from monai.networks.schedulers import RFlowScheduler, Scheduler


def is_rectified_flow(scheduler: Scheduler) -> bool:
    """Whether ``scheduler`` is MONAI's rectified-flow scheduler (velocity towards the data)."""
    return isinstance(scheduler, RFlowScheduler)


def training_timesteps(scheduler: Scheduler, latents: torch.Tensor) -> torch.Tensor:
    """Random training timesteps, one per item: uniform integers for DDPM, the scheduler's own for RFlow.

    Examples
    --------
    >>> from monai.networks.schedulers import DDPMScheduler
    >>> t = training_timesteps(DDPMScheduler(10), torch.zeros(3, 1, 4, 4))
    >>> t.shape, bool((t < 10).all())
    (torch.Size([3]), True)
    """
    if is_rectified_flow(scheduler):
        return scheduler.sample_timesteps(latents)
    return torch.randint(0, scheduler.num_train_timesteps, (latents.shape[0],), device=latents.device).long()


def diffusion_target(scheduler: Scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The regression target of the UNet: noise, velocity or clean latents (DDPM), or ``x0 - noise`` (RFlow).

    Examples
    --------
    >>> from monai.networks.schedulers import DDPMScheduler
    >>> x, n = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    >>> bool(torch.equal(diffusion_target(DDPMScheduler(10), x, n, torch.tensor([3])), n))
    True
    """
    if is_rectified_flow(scheduler):
        return latents - noise
    prediction = str(getattr(scheduler, "prediction_type", "epsilon"))
    if prediction == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if prediction == "sample":
        return latents
    return noise
