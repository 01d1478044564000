"""Latent diffusion engines on ``monai.engines``: autoencoder and diffusion trainers, sampler, guarded generation,
and a training progress bar.

Examples
--------
>>> from monai_pso.engines import AutoencoderTrainer, LatentDiffusionTrainer, LatentDiffusionSampler
"""

from monai_pso.engines.autoencoder import AutoencoderTrainer
from monai_pso.engines.checkpoint import load_checkpoint, load_weights, read_scale_factor
from monai_pso.engines.conditioning import Conditioning, PooledFeatured, pooled_features
from monai_pso.engines.diffusion import LatentDiffusionTrainer
from monai_pso.engines.ema import ema_of
from monai_pso.engines.guarded import DEFAULT_CHECKS, guard_checker, guard_paths, privacy_guard
from monai_pso.engines.generation import GenerationWorkflow, GuidanceSchedule, derive_seed, diversity_requests, generation_requests
from monai_pso.engines.losses import kl_loss, offline_perceptual_loss
from monai_pso.engines.progress import TrainingProgressBar
from monai_pso.engines.release import ReleaseWriter, release_manifest
from monai_pso.engines.sampler import LatentDiffusionSampler

__all__ = [
    "DEFAULT_CHECKS",
    "AutoencoderTrainer",
    "Conditioning",
    "GenerationWorkflow",
    "GuidanceSchedule",
    "LatentDiffusionSampler",
    "LatentDiffusionTrainer",
    "PooledFeatured",
    "ReleaseWriter",
    "TrainingProgressBar",
    "derive_seed",
    "diversity_requests",
    "ema_of",
    "generation_requests",
    "guard_checker",
    "guard_paths",
    "kl_loss",
    "load_checkpoint",
    "load_weights",
    "offline_perceptual_loss",
    "pooled_features",
    "privacy_guard",
    "read_scale_factor",
    "release_manifest",
]
