"""Engines on tiny networks: autoencoder and diffusion trainers, sampler determinism, guarded release writing."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

from monai_pso.engines import (
    AutoencoderTrainer,
    Conditioning,
    GenerationWorkflow,
    GuidanceSchedule,
    LatentDiffusionSampler,
    LatentDiffusionTrainer,
    ReleaseWriter,
    ema_of,
    generation_requests,
    load_weights,
    read_scale_factor,
)
from monai_pso.engines.bundle import image_size
from monai_pso.errors import ConfigurationError, MonaiPsoError

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


class RejectSeeds:
    """A stand-in guard: drops images whose seed is listed, redraws them, keeps what passes."""

    def __init__(self, rejected_seeds, regenerate, max_attempts):
        self.rejected, self.regenerate, self.max_attempts = set(rejected_seeds), regenerate, max_attempts
        self.attempts = []

    def attach(self, engine):
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine):
        kept = []
        for item in engine.state.output:
            attempt = 0
            while item["seed"] in self.rejected and attempt + 1 < self.max_attempts:
                attempt += 1
                item = self.regenerate(item, attempt)
            self.attempts.append((item["item_id"], attempt, item["guidance_scale"]))
            if item["seed"] not in self.rejected:
                kept.append(item)
        engine.state.output = kept


def test_guarded_generation_writes_only_passing_images(tmp_path):
    sampler = LatentDiffusionSampler(tiny_autoencoder(), tiny_unet(), DDIMScheduler(20), 1.0, (2, 8, 8), num_inference_steps=2)
    schedule = GuidanceSchedule(start=3.0, floor=2.0, step=1.0, attempts_per_level=1)
    requests = generation_requests(4, seed=10, guidance_scale=3.0)
    engine = GenerationWorkflow(sampler, requests, batch_size=3, schedule=schedule)
    # seed 11 passes on a redraw; seed 12 and every redraw of it are rejected
    from monai_pso.engines import derive_seed

    guard = RejectSeeds({11, 12} | {derive_seed(12, a) for a in range(1, 4)}, engine.regenerate, schedule.total_attempts)
    writer = ReleaseWriter(tmp_path / "release", "png", manifest={"seed": 10}, require_guard=False)  # a stand-in guard certifies nothing
    guard.attach(engine)
    writer.attach(engine)
    engine.run()
    files = sorted(p.relative_to(tmp_path / "release").as_posix() for p in (tmp_path / "release").rglob("*.*"))
    assert files == ["images/synthetic-00000.png", "images/synthetic-00001.png", "images/synthetic-00003.png", "manifest.json"]
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["n_released"] == 3 and manifest["seed"] == 10
    assert [f["path"] for f in manifest["files"]] == files[:3]
    redrawn = next(i for i in manifest["items"] if i["item_id"] == "synthetic-00001")
    assert redrawn["attempt"] == 1 and redrawn["guidance_scale"] == 2.0  # guidance lowered after the first failure
    assert ("synthetic-00002", 1, 2.0) in guard.attempts
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".release")]  # staging folder moved


def test_writer_refuses_images_the_guard_did_not_certify(tmp_path):
    sampler = LatentDiffusionSampler(tiny_autoencoder(), tiny_unet(), DDIMScheduler(20), 1.0, (2, 8, 8), num_inference_steps=2)
    engine = GenerationWorkflow(sampler, generation_requests(2), batch_size=2)
    ReleaseWriter(tmp_path / "release", "png").attach(engine)  # no guard attached before it
    with pytest.raises(MonaiPsoError, match="not certified by the privacy guard"):
        engine.run()
    assert list(tmp_path.iterdir()) == []


def test_failed_generation_leaves_no_output(tmp_path):
    sampler = LatentDiffusionSampler(tiny_autoencoder(), tiny_unet(), DDIMScheduler(20), 1.0, (2, 8, 8), num_inference_steps=2)
    engine = GenerationWorkflow(sampler, generation_requests(2), batch_size=1)
    ReleaseWriter(tmp_path / "release", "png", require_guard=False).attach(engine)

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
