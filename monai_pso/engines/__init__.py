"""Latent diffusion engines on ``monai.engines``: autoencoder and diffusion trainers, sampler, generation workflow,
and a training progress bar (the guard and the release attach to them from :mod:`monai_pso.release`).

Examples
--------
>>> from monai_pso.engines import AutoencoderTrainer, LatentDiffusionTrainer, LatentDiffusionSampler
"""

from monai_pso.engines.autoencoder import AutoencoderTrainer
from monai_pso.engines.checkpoint import load_checkpoint, load_weights, read_scale_factor
from monai_pso.engines.conditioning import Conditioning, PooledFeatured, pooled_features
from monai_pso.engines.diffusion import LatentDiffusionTrainer
from monai_pso.engines.ema import ema_of
from monai_pso.engines.generation import GenerationWorkflow, GuidanceSchedule, derive_seed, diversity_requests, generation_requests
from monai_pso.engines.latents import PixelSpace, save_pixel_space
from monai_pso.engines.losses import kl_loss, offline_perceptual_loss
from monai_pso.engines.progress import TrainingProgressBar
from monai_pso.engines.sampler import LatentDiffusionSampler

__all__ = [
    "AutoencoderTrainer",
    "Conditioning",
    "GenerationWorkflow",
    "GuidanceSchedule",
    "LatentDiffusionSampler",
    "LatentDiffusionTrainer",
    "PixelSpace",
    "PooledFeatured",
    "TrainingProgressBar",
    "derive_seed",
    "diversity_requests",
    "ema_of",
    "generation_requests",
    "kl_loss",
    "load_checkpoint",
    "load_weights",
    "offline_perceptual_loss",
    "pooled_features",
    "read_scale_factor",
    "save_pixel_space",
]
