"""Stage 1 of a latent diffusion model: train a MONAI ``AutoencoderKL`` (L1 + perceptual + KL + PatchGAN)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from monai.engines.utils import IterationEvents
from monai.losses import PatchAdversarialLoss
from monai.utils.enums import CommonKeys as Keys

from monai_pso.engines.base import GenerativeTrainer
from monai_pso.engines.losses import kl_loss
from monai_pso.errors import ConfigurationError


class AutoencoderTrainer(GenerativeTrainer):
    """Train an autoencoder the way MONAI's latent-diffusion tutorials and model-zoo bundles do.

    Generator loss: ``L1 + perceptual_weight * perceptual + kl_weight * KL + adv_weight * adversarial``,
    the adversarial term (least-squares PatchGAN, ``monai.losses.PatchAdversarialLoss``) only after
    ``adversarial_warmup_epochs``, when the discriminator also starts training on its own optimizer.
    2D and 3D alike; for 3D, build the autoencoder with ``use_checkpoint=True`` for activation checkpointing.

    Parameters
    ----------
    device, max_epochs, train_data_loader, epoch_length, image_key, bf16, handlers, non_blocking
        See :class:`~monai_pso.engines.base.GenerativeTrainer`.
    autoencoder
        ``monai.networks.nets.AutoencoderKL``.
    g_optimizer
        Optimizer of the autoencoder.
    discriminator, d_optimizer
        ``monai.networks.nets.PatchDiscriminator`` and its optimizer; ``None`` trains without adversarial loss.
    perceptual_loss
        A perceptual loss module (:func:`~monai_pso.engines.losses.offline_perceptual_loss`) or ``None``.
    perceptual_weight, kl_weight, adv_weight
        Loss weights (MONAI tutorial defaults).
    adversarial_warmup_epochs
        Epochs trained before the adversarial terms switch on.

    Examples
    --------
    >>> from monai.networks.nets import AutoencoderKL
    >>> ae = AutoencoderKL(2, 1, 1, channels=(8, 8), latent_channels=2, num_res_blocks=1, norm_num_groups=4,
    ...                    attention_levels=(False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    >>> data = [{"image": torch.rand(2, 1, 16, 16)}]
    >>> trainer = AutoencoderTrainer("cpu", 1, data, ae, torch.optim.Adam(ae.parameters(), 1e-4))
    >>> trainer.run(); sorted(k for k in trainer.state.output if k.endswith("_loss"))
    ['kl_loss', 'recon_loss']
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        autoencoder: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        discriminator: torch.nn.Module | None = None,
        d_optimizer: torch.optim.Optimizer | None = None,
        perceptual_loss: torch.nn.Module | None = None,
        perceptual_weight: float = 1e-3,
        kl_weight: float = 1e-6,
        adv_weight: float = 1e-2,
        adversarial_warmup_epochs: int = 5,
        epoch_length: int | None = None,
        image_key: str = "image",
        bf16: bool | str = "auto",
        handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, epoch_length, image_key, bf16, handlers, non_blocking)
        if (discriminator is None) != (d_optimizer is None):
            raise ConfigurationError("discriminator, d_optimizer: give both (adversarial training) or neither")
        self.autoencoder = autoencoder
        self.g_optimizer = g_optimizer
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = perceptual_weight
        self.kl_weight = kl_weight
        self.adv_weight = adv_weight
        self.adversarial_warmup_epochs = adversarial_warmup_epochs
        self.adversarial_loss = PatchAdversarialLoss(criterion="least_squares")
        self._attach_handlers()

    def adversarial_active(self) -> bool:
        """Whether this epoch trains with the adversarial terms."""
        return self.discriminator is not None and self.state.epoch > self.adversarial_warmup_epochs

    def _iteration(self, engine: AutoencoderTrainer, batchdata: dict) -> dict:
        images = engine.images_of(batchdata)
        adversarial = engine.adversarial_active()
        engine.autoencoder.train()
        engine.g_optimizer.zero_grad(set_to_none=True)
        with engine.autocast():
            recon, z_mu, z_sigma = engine.autoencoder(images)
        recon = recon.float()
        engine.state.output = {Keys.IMAGE: images, Keys.PRED: recon}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = {"recon_loss": torch.nn.functional.l1_loss(recon, images), "kl_loss": kl_loss(z_mu.float(), z_sigma.float())}
        loss = terms["recon_loss"] + engine.kl_weight * terms["kl_loss"]
        if engine.perceptual_loss is not None:
            terms["perceptual_loss"] = engine.perceptual_loss(recon, images)
            loss = loss + engine.perceptual_weight * terms["perceptual_loss"]
        if adversarial:
            logits = engine.discriminator(recon.contiguous())[-1]
            terms["g_adv_loss"] = engine.adversarial_loss(logits, target_is_real=True, for_discriminator=False)
            loss = loss + engine.adv_weight * terms["g_adv_loss"]
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.g_optimizer.step()
        if adversarial:
            terms["d_loss"] = engine._discriminator_step(images, recon)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output.update({name: float(value.detach()) for name, value in terms.items()})
        engine.state.output[Keys.LOSS] = float(loss.detach())
        return engine.state.output

    def _discriminator_step(self, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """One discriminator update on real images and detached reconstructions; returns its loss."""
        self.discriminator.train()
        self.d_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            fake = self.discriminator(recon.detach().contiguous())[-1].float()
            real = self.discriminator(images.contiguous())[-1].float()
        loss = 0.5 * (
            self.adversarial_loss(fake, target_is_real=False, for_discriminator=True)
            + self.adversarial_loss(real, target_is_real=True, for_discriminator=True)
        )
        (self.adv_weight * loss).backward()
        self.d_optimizer.step()
        return loss.detach()
