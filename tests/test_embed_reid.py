"""The reid embedder: contrastive training on 2D and 3D phantoms, verification AUC, save and reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_pso.data import load_image, load_source
from monai_pso.embed import ReidEmbedder, load_embedder, train_reid, verification_auc
from monai_pso.embed.augment import BatchAugment
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.embed.reid_training import IdentityBatches, supervised_contrastive_loss
from monai_pso.embed.verification import guard_style_split, nearest_reference_auc
from monai_pso.errors import DataSourceError, ImageValueError

TINY = dict(dim=16, channels=(8, 8, 16, 16), batch_size=8, progress=False)


@pytest.fixture(scope="module")
def trained_2d() -> ReidEmbedder:
    """6 epochs on a 2D phantom with 3 validation patients (measured val AUC over seeds 0-5: 0.77-1.0)."""
    return train_reid("phantom:2d?patients=20&acquisitions=3&size=32&seed=1", epochs=6, seed=0, **TINY)


@pytest.fixture(scope="module")
def trained_3d() -> ReidEmbedder:
    return train_reid("phantom:3d?patients=12&acquisitions=2&size=16", epochs=2, seed=0, **TINY)


@pytest.mark.parametrize("fixture, shape", [("trained_2d", (32, 32)), ("trained_3d", (16, 16, 16))])
def test_training_reports_auc_and_reloads_identically(request, tmp_path, fixture, shape):
    embedder = request.getfixturevalue(fixture)
    provenance = embedder.provenance
    assert 0.0 <= provenance["val_auc"] <= 1.0 and 0.0 <= provenance["pixel_val_auc"] <= 1.0
    assert provenance["epochs"] >= 2 and provenance["train_patients"] >= 2 and np.isfinite(provenance["final_loss"])
    images = torch.rand((3, 1) + shape)
    vectors = embedder.embed(images).vectors
    assert vectors.shape == (3, 1, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)

    embedder.save(tmp_path)
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert set(state) == set(embedder.state_dict())
    reloaded = load_embedder(tmp_path)
    assert reloaded.fingerprint == embedder.fingerprint
    assert reloaded.provenance["val_auc"] == provenance["val_auc"]
    assert np.array_equal(reloaded.embed(images).vectors, vectors)
    assert np.array_equal(reloaded.embed_queries(images).vectors, embedder.embed_queries(images).vectors)


def test_fingerprint_covers_weights_not_their_location(trained_2d, tmp_path):
    before = trained_2d.fingerprint
    trained_2d.save(tmp_path / "a")
    assert trained_2d.fingerprint == before and trained_2d.settings["weights"].endswith("weights.pt")
    other = ReidEmbedder(**{k: v for k, v in trained_2d.settings.items() if k not in ("name", "weights")})
    assert other.fingerprint != before  # same settings, other (random) weights


def test_training_is_reproducible_by_seed():
    source = "phantom:2d?patients=6&acquisitions=2&size=16"
    runs = [train_reid(source, epochs=1, seed=seed, **TINY).fingerprint for seed in (3, 3, 4)]
    assert runs[0] == runs[1] != runs[2]


def test_2d_phantom_training_beats_chance(trained_2d):
    assert trained_2d.provenance["val_patients"] >= 3
    assert trained_2d.provenance["val_auc"] > 0.6


def test_verification_auc_uses_augmented_views_for_single_image_patients():
    images = torch.rand(6, 1, 16, 16)
    embedder = ReidEmbedder(spatial_dims=2, dim=8, channels=(8, 8, 8, 8), input_size=16)
    assert verification_auc(embedder, images, list("abcdef")) is None  # no same-patient pair
    auc = verification_auc(embedder, images, list("abcdef"), BatchAugment(2, seed=0))
    assert 0.0 <= auc <= 1.0


def test_contrastive_loss_prefers_patients_grouped_together():
    vectors = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    grouped = torch.cat([vectors[:4], vectors[:4] + 0.01 * torch.randn(4, 4)])
    grouped = torch.nn.functional.normalize(grouped, dim=1)
    labels = torch.arange(4).repeat(2)
    assert supervised_contrastive_loss(grouped, labels) < supervised_contrastive_loss(vectors, labels)


def test_augmentation_is_seeded_and_keeps_range():
    batch = torch.rand(4, 1, 12, 12, 12)
    first, again, other = BatchAugment(3, seed=5)(batch), BatchAugment(3, seed=5)(batch), BatchAugment(3, seed=6)(batch)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == batch.shape and 0.0 <= first.min() and first.max() <= 1.0


def test_reid_refuses_wrong_dimensionality_and_single_patient_sources():
    with pytest.raises(ImageValueError, match="2D"):
        ReidEmbedder(spatial_dims=2, dim=8, channels=(8, 8, 8, 8), input_size=16).embed(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(DataSourceError, match="2 patients"):
        train_reid("phantom:2d?patients=1&acquisitions=2&size=16", epochs=1, **TINY)


def test_embed_accepts_loaded_records(phantom_2d_source, trained_2d):
    records = load_source(phantom_2d_source).records[:2]
    assert len(trained_2d.embed([load_image(r) for r in records])) == 2


@pytest.mark.parametrize("seed", range(4))
def test_identity_batches_pair_other_acquisitions_and_mine_look_alike_strangers(seed):
    rng = np.random.default_rng(1000 + seed)  # random sizes and values, reproducible on failure
    patients = [f"p{i}" for i in range(8) for _ in range(int(rng.integers(2, 5)))] + [f"single{i}" for i in range(6)]
    thumbnails = torch.as_tensor(rng.uniform(0, 1, (len(patients), 16)), dtype=torch.float32)
    batches = IdentityBatches(patients, thumbnails, batch_size=int(rng.integers(2, 9)), seed=int(rng.integers(0, 1000)), k=3)
    labels = np.asarray(patients)
    seen = set()
    for chosen, batch_labels in batches.epoch():
        third = len(chosen) // 3
        anchors, partners, negatives = chosen[:third], chosen[third : 2 * third], chosen[2 * third :]
        assert not any(labels[a].startswith("single") for a in anchors)  # single-image patients are negatives only
        assert (partners != anchors).all() and (labels[partners] == labels[anchors]).all()  # another acquisition
        assert (labels[negatives] != labels[anchors]).all()
        for a, n in zip(anchors, negatives):
            others = np.flatnonzero(labels != labels[a])
            gaps = (thumbnails[others] - thumbnails[a]).norm(dim=1).numpy()
            assert (thumbnails[n] - thumbnails[a]).norm() <= np.sort(gaps)[2] + 1e-6  # among the 3 nearest strangers
        assert torch.equal(batch_labels, torch.as_tensor(batches.labels[chosen]))
        seen.update(anchors.tolist())
    assert seen == {i for i, p in enumerate(patients) if not p.startswith("single")}


def test_fine_tuning_starts_from_the_given_network(trained_2d):
    tuned = train_reid("phantom:2d?patients=8&acquisitions=2&size=32&seed=2", epochs=1, initial=trained_2d, learning_rate=1e-4, **TINY)
    assert tuned.settings["input_size"] == trained_2d.settings["input_size"] and tuned.provenance["fine_tuned_from"] == trained_2d.fingerprint
    before, after = trained_2d.state_dict(), tuned.state_dict()
    assert set(before) == set(after) and any(not torch.equal(before[k], after[k]) for k in before)
    assert "val_nearest_auc" in tuned.provenance


def test_nearest_reference_auc_splits_patients_as_the_guard_meets_them():
    patients = [p for p in "abcdef" for _ in range(3)] + ["g"]
    reference, probe, trained = guard_style_split(patients, seed=0)
    labels = np.asarray(patients)
    assert not (reference & probe).any() and (reference | probe).all()
    trained_patients, probe_patients = set(labels[trained]), set(labels[probe & ~trained])
    assert len(trained_patients) == 3 and not trained_patients & probe_patients and "g" not in trained_patients | probe_patients
    assert all(set(labels[reference]) >= {p} for p in trained_patients) and not set(labels[reference]) & probe_patients
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(len(patients), 1, 16, 16, generator=generator)
    for i, p in enumerate(patients):  # each patient's images: one base with small noise
        images[i] = images[patients.index(p)] * 0.95 + 0.05 * torch.rand(1, 16, 16, generator=generator)
    assert nearest_reference_auc(PixelEmbedder(flip_axes=[]), images, patients) == 1.0
    assert nearest_reference_auc(PixelEmbedder(flip_axes=[]), images[:3], patients[:3]) is None  # one patient: no unseen probe
