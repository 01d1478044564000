"""Engines on tiny networks: autoencoder and diffusion trainers, sampler determinism, guarded release writing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

from guard_support import small_guard
from monai_pso.data import load_image, load_source
from monai_pso.engines import (
    AutoencoderTrainer,
    Conditioning,
    GenerationWorkflow,
    GuidanceSchedule,
    LatentDiffusionSampler,
    LatentDiffusionTrainer,
    derive_seed,
    ema_of,
    generation_requests,
    load_weights,
    read_scale_factor,
)
from monai_pso.engines.bundle import image_size
from monai_pso.errors import ConfigurationError, MonaiPsoError
from monai_pso.release import GuardedRelease, ReleaseBuilder, ReleaseWriter, open_release, read_item_map

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_autoencoder() -> AutoencoderKL:
    return AutoencoderKL(2, 1, 1, channels=(8, 8), latent_channels=2, num_res_blocks=1, norm_num_groups=4,
                         attention_levels=(False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)


def tiny_unet(**conditioning) -> DiffusionModelUNet:
    return DiffusionModelUNet(2, 2, 2, channels=(8, 8), attention_levels=(False, True), num_head_channels=(0, 8),
                              num_res_blocks=1, norm_num_groups=4, **conditioning)


def batches(n: int = 2, size: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(2, 1, size, size, generator=g), "label": torch.tensor([0, 1]),
             "features": torch.rand(2, 6, generator=g), "item_id": [f"a{i}", f"b{i}"]} for i in range(n)]


def count_events(engine) -> dict:
    counts = {event: 0 for event in IterationEvents}
    for event in IterationEvents:
        engine.add_event_handler(event, lambda e, ev=event: counts.__setitem__(ev, counts[ev] + 1))
    return counts


def test_autoencoder_trainer_adversarial_events_and_checkpoint(tmp_path):
    ae = tiny_autoencoder()
    disc = PatchDiscriminator(2, num_layers_d=1, channels=8, in_channels=1, out_channels=1)
    g_opt, d_opt = torch.optim.Adam(ae.parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3)
    trainer = AutoencoderTrainer("cpu", 2, batches(), ae, g_opt, disc, d_opt, adversarial_warmup_epochs=1)
    counts = count_events(trainer)
    before = [p.detach().clone() for p in disc.parameters()]
    d_losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: d_losses.append(e.state.output.get("d_loss")))
    CheckpointSaver(str(tmp_path), {"autoencoder": ae, "trainer": trainer}, save_final=True, final_filename="ae.pt").attach(trainer)
    trainer.run()
    assert counts[IterationEvents.FORWARD_COMPLETED] == counts[IterationEvents.MODEL_COMPLETED] == 4
    assert d_losses[:2] == [None, None] and all(v is not None for v in d_losses[2:])  # warm-up, then adversarial
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    restored = load_weights(tiny_autoencoder(), tmp_path / "ae.pt", "autoencoder")
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), ae.state_dict().values()))


@pytest.mark.parametrize(
    "scheduler, conditioning, unet_kwargs",
    [
        (DDPMScheduler(50), None, {}),
        (DDPMScheduler(50, prediction_type="v_prediction"), Conditioning("class", "label", null_class=2), {"num_class_embeds": 3}),
        (RFlowScheduler(50, use_discrete_timesteps=False, spatial_dim=2), Conditioning("context", "features"), {"with_conditioning": True, "cross_attention_dim": 6}),
    ],
)
def test_latent_diffusion_trainer(tmp_path, scheduler, conditioning, unet_kwargs):
    unet = tiny_unet(**unet_kwargs)
    ema = ema_of(unet, 0.9)
    trainer = LatentDiffusionTrainer("cpu", 2, batches(), unet, torch.optim.Adam(unet.parameters(), 1e-3), tiny_autoencoder(),
                                     scheduler, conditioning=conditioning, cfg_dropout=0.5, ema=ema, cache_latents=True)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    CheckpointSaver(str(tmp_path), {"unet": unet, "ema": ema, "trainer": trainer}, save_final=True, final_filename="d.pt").attach(trainer)
    trainer.run()
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert len(trainer.latent_cache) == 4 and int(ema.n_averaged) == 4
    assert read_scale_factor(tmp_path / "d.pt") == pytest.approx(trainer.state.scale_factor)
    ema_net = load_weights(tiny_unet(**unet_kwargs), tmp_path / "d.pt", "ema")
    assert any(not torch.equal(a, b) for a, b in zip(ema_net.parameters(), unet.parameters()))


def test_resume_keeps_scale_factor_and_iteration(tmp_path):
    unet, ae = tiny_unet(), tiny_autoencoder()
    opt = torch.optim.Adam(unet.parameters(), 1e-3)
    first = LatentDiffusionTrainer("cpu", 1, batches(), unet, opt, ae, DDPMScheduler(50))
    CheckpointSaver(str(tmp_path), {"unet": unet, "optimizer": opt, "trainer": first}, save_final=True, final_filename="d.pt").attach(first)
    first.run()
    from monai.handlers import CheckpointLoader

    unet2 = tiny_unet()
    opt2 = torch.optim.Adam(unet2.parameters(), 1e-3)
    second = LatentDiffusionTrainer("cpu", 2, batches(), unet2, opt2, ae, DDPMScheduler(50))
    CheckpointLoader(str(tmp_path / "d.pt"), {"unet": unet2, "optimizer": opt2, "trainer": second}).attach(second)
    second.run()
    assert second.state.scale_factor == pytest.approx(first.state.scale_factor) and second.state.iteration == 4


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "rflow"])
def test_sampler_is_deterministic_per_seed_whatever_the_batch(kind):
    scheduler = {"ddpm": DDPMScheduler(20), "ddim": DDIMScheduler(20), "rflow": RFlowScheduler(20, spatial_dim=2)}[kind]
    sampler = LatentDiffusionSampler(tiny_autoencoder(), tiny_unet(num_class_embeds=3), scheduler, 1.0, (2, 8, 8),
                                     num_inference_steps=4 if kind != "ddpm" else 20, guidance_scale=2.0,
                                     conditioning=Conditioning("class", null_class=2))
    together = sampler([1, 2, 3], condition=torch.tensor([0, 1, 1]))
    alone = sampler([2], condition=torch.tensor([1]))
    assert torch.allclose(together[1], alone[0], atol=1e-5)
    assert not torch.allclose(together[1], together[2], atol=1e-4)
    assert together.min() >= 0 and together.max() <= 1


GUARD_SOURCE = "phantom:2d?patients=8&acquisitions=2&size=16&seed=5"


@pytest.fixture(scope="module")
def guard():
    """A one-check guard of 16 x 16 phantom images (the tiny sampler's images lie far from them) and its training images."""
    source = load_source(GUARD_SOURCE)
    return small_guard(source), np.stack([load_image(r) for r in source.split("train")])


class PlantCopies:
    """Wraps a sampler: a draw whose seed is listed comes back as a training image (which the guard rejects)."""

    def __init__(self, sampler, copy_seeds, copy):
        self.sampler, self.copy_seeds, self.copy, self.device = sampler, set(copy_seeds), torch.as_tensor(copy), sampler.device
        self.draws = []  # (seed, guidance scale) of every draw

    def __call__(self, seeds, condition=None, guidance_scale=None):
        images = self.sampler(seeds, condition, guidance_scale)
        for i, seed in enumerate(seeds):
            self.draws.append((int(seed), float(guidance_scale)))
            if int(seed) in self.copy_seeds:
                images[i] = self.copy
        return images


def tiny_sampler() -> LatentDiffusionSampler:
    return LatentDiffusionSampler(tiny_autoencoder(), tiny_unet(), DDIMScheduler(20), 1.0, (2, 8, 8), num_inference_steps=2)


def test_guarded_generation_writes_only_passing_images(guard, tmp_path):
    checker, training = guard
    schedule = GuidanceSchedule(start=3.0, floor=2.0, step=1.0, attempts_per_level=1)
    requests = generation_requests(4, seed=10, guidance_scale=3.0)
    # seed 11 passes on a redraw; seed 12 and every redraw of it are copies
    sampler = PlantCopies(tiny_sampler(), {11, 12} | {derive_seed(12, a) for a in range(1, 4)}, training[0])
    engine = GenerationWorkflow(sampler, requests, batch_size=3, schedule=schedule)
    GuardedRelease(checker, engine, tmp_path / "release", "png", provenance={"seed": 10}, record=False).attach(engine)
    engine.run()

    release = tmp_path / "release"
    original = read_item_map(release)  # released ids are opaque; the private map beside the release names them
    manifest = json.loads((release / "manifest.json").read_text())
    files = sorted(p.relative_to(release).as_posix() for p in (release / "images").rglob("*.*"))
    assert sorted(original[f["item"]] for f in manifest["files"]) == ["synthetic-00000", "synthetic-00001", "synthetic-00003"]
    assert files == sorted(f["path"] for f in manifest["files"]) == sorted(f"images/{f['item']}.png" for f in manifest["files"])
    assert manifest["counts"]["released"] == 3 and manifest["counts"]["dropped"] == 1 and manifest["provenance"]["seed"] == 10
    redrawn = next(i for i in manifest["items"] if original[i["item"]] == "synthetic-00001")
    assert redrawn["attempt"] == 1 and redrawn["guidance_scale"] == 2.0  # guidance lowered after the first failure
    assert (derive_seed(12, 1), 2.0) in sampler.draws and len(sampler.draws) == 4 + 2  # bounded: one redraw each for 11 and 12
    summary = open_release(release).summary  # the release schema check, too
    assert summary["generation"]["dropped"] == [n for n, i in original.items() if i == "synthetic-00002"]
    assert summary["generation"]["counts"]["regenerated"] == 2 and summary["counts"]["draws"] == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".release")]  # staging folder moved


def test_writer_refuses_images_the_guard_did_not_certify(guard, tmp_path):
    checker, _ = guard
    engine = GenerationWorkflow(tiny_sampler(), generation_requests(2), batch_size=2)
    ReleaseWriter(ReleaseBuilder(tmp_path / "release", checker, "png", record=False)).attach(engine)  # no guard attached before it
    with pytest.raises(MonaiPsoError, match="not certified by the privacy guard"):
        engine.run()
    assert list(tmp_path.iterdir()) == []


def test_failed_generation_leaves_no_output(guard, tmp_path):
    checker, _ = guard
    engine = GenerationWorkflow(tiny_sampler(), generation_requests(2), batch_size=1)
    GuardedRelease(checker, engine, tmp_path / "release", "png", record=False).attach(engine)

    def fail(e):
        if e.state.iteration == 2:
            raise RuntimeError("boom")

    engine.add_event_handler(Events.ITERATION_COMPLETED, fail)
    with pytest.raises(RuntimeError):
        engine.run()
    assert list(tmp_path.iterdir()) == []


def test_bad_conditioning_and_modality_settings_name_the_setting():
    with pytest.raises(ConfigurationError, match="condition_mode='text'"):
        Conditioning("text")
    with pytest.raises(ConfigurationError, match="null_class"):
        Conditioning("class")
    with pytest.raises(ConfigurationError, match="condition_key='label'"):
        Conditioning("class", "label", null_class=2).from_batch({"image": torch.zeros(1)}, "cpu")
    with pytest.raises(ConfigurationError, match="modality='ultrasound'"):
        image_size("ultrasound", 2)
    with pytest.raises(ConfigurationError, match="modality='xray': has no 3D"):
        image_size("xray", 3)
