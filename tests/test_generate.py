"""Guarded generation against the real default guard (two checks), the ``generate`` CLI, the bundle's
``inference.json`` through ``monai.bundle.run``, the diversity-aware scheme, and the release ledger.

The generator is a tiny untrained latent diffusion model at 16 x 16 (its images are far from the
phantom); copies are planted by wrapping its sampler so that chosen draws come back as training images.
Every released file is read back from disk and its distance recomputed by an independent float64 brute
force (``guard_support.brute_force_released``).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from monai.bundle import run
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler
from PIL import Image

from guard_support import brute_force_released
from monai_pso.cli.main import main
from monai_pso.data import load_image, load_source
from monai_pso.engines import (
    GenerationWorkflow,
    GuidanceSchedule,
    LatentDiffusionSampler,
    derive_seed,
    diversity_requests,
    generation_requests,
    pooled_features,
)
from monai_pso.engines.bundle_runs import TRAINED_OUTPUTS, configure_bundle
from monai_pso.guard import build_guard
from monai_pso.release import GuardedRelease, open_release, read_item_map
from monai_pso.release.ledger import verify_ledger

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = "phantom:2d?patients=10&acquisitions=3&size=16&seed=3"
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY_BUNDLE = {
    "dataset_source": SOURCE, "image_size": [16, 16], "batch_size": 4, "epoch_length": 2, "max_epochs": 1, "diffusion_max_epochs": 1,
    "adversarial_warmup_epochs": 1, "ae_channels": [4, 4], "latent_channels": 2, "ae_num_res_blocks": 1, "norm_num_groups": 4,
    "disc_channels": 4, "disc_layers": 1, "unet_channels": [8, 8], "unet_attention_levels": [False, True], "unet_num_head_channels": [0, 8],
    "unet_num_res_blocks": 1,
}


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    """The default two-check guard folder of the phantom's train split (a bundle's ``privacy`` folder)."""
    folder = tmp_path_factory.mktemp("privacy")
    checker = build_guard(SOURCE, folder, progress=False, n_bootstrap=200)
    training = np.stack([load_image(r) for r in load_source(SOURCE).split("train")])
    return folder, checker, training


def tiny_sampler(context_dim: int | None = None) -> LatentDiffusionSampler:
    """An untrained LDM at 16 x 16 (latents 2 x 8 x 8), context-conditioned when ``context_dim`` is given."""
    torch.manual_seed(0)
    autoencoder = AutoencoderKL(2, 1, 1, channels=(8, 8), latent_channels=2, num_res_blocks=1, norm_num_groups=4,
                                attention_levels=(False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    conditioning = {"with_conditioning": True, "cross_attention_dim": context_dim} if context_dim else {}
    unet = DiffusionModelUNet(2, 2, 2, channels=(8, 8), attention_levels=(False, True), num_head_channels=(0, 8),
                              num_res_blocks=1, norm_num_groups=4, **conditioning)
    from monai_pso.engines import Conditioning

    return LatentDiffusionSampler(autoencoder, unet, DDIMScheduler(100), 1.0, (2, 8, 8), num_inference_steps=2,
                                  conditioning=Conditioning("context", "features") if context_dim else None)


class PlantingSampler:
    """Wraps a sampler: a draw for which ``plant(seed, guidance)`` gives an image returns that image instead."""

    def __init__(self, sampler: LatentDiffusionSampler, plant: Callable[[int, float], np.ndarray | None]) -> None:
        self.sampler, self.plant, self.device = sampler, plant, sampler.device

    def __call__(self, seeds, condition=None, guidance_scale=None) -> torch.Tensor:
        images = self.sampler(seeds, condition, guidance_scale)
        for i, seed in enumerate(seeds):
            copy = self.plant(int(seed), float(guidance_scale))
            if copy is not None:
                images[i] = torch.as_tensor(copy)
        return images


def released_images(release: Path) -> tuple[list[str], np.ndarray]:
    """The released files of a release, read back from disk: item ids and images ``(N, 1, H, W)`` in [0, 1]."""
    manifest = json.loads((release / "manifest.json").read_text())
    ids = [f["item"] for f in manifest["files"]]
    images = [np.asarray(Image.open(release / f["path"]), np.float32)[None] / 255.0 for f in manifest["files"]]
    return ids, np.stack(images) if images else np.zeros((0, 1, 16, 16), np.float32)


def assert_certified(release: Path, checker, training: np.ndarray) -> None:
    """Every released file lies at least tau from every training image in every check (float64 brute force)."""
    ids, images = released_images(release)
    assert len(ids) == open_release(release).counts["released"]  # the schema check of every release, too
    assert sorted(p.relative_to(release).as_posix() for p in (release / "images").iterdir()) == sorted(f"images/{i}.png" for i in ids)
    if not ids:
        return
    passed, distances = brute_force_released(checker, training, images)
    for check in checker.checks:
        assert (distances[check.name] >= check.tau).all(), (check.name, distances[check.name].min(), check.tau)
    assert passed.all()


def draw_rows(release: Path) -> dict[str, list[dict]]:
    """Per request id (through the private map of released ids), its rows of ``draws.csv`` (one per draw)."""
    original = read_item_map(release)
    rows: dict[str, list[dict]] = {}
    with (release / "draws.csv").open(newline="") as stream:
        for row in csv.DictReader(stream):
            rows.setdefault(original[row["item"]], []).append(row)
    return rows


def item_rows(release: Path) -> dict[str, dict]:
    """``audit.csv``: one row per item, by request id."""
    original = read_item_map(release)
    with (release / "audit.csv").open(newline="") as stream:
        return {original[row["item"]]: row for row in csv.DictReader(stream)}


def manifest_items(release: Path) -> dict[str, dict]:
    """The manifest's released items, by request id."""
    original = read_item_map(release)
    return {original[item["item"]]: item for item in json.loads((release / "manifest.json").read_text())["items"]}


def test_planted_copies_never_reach_the_release(guard, tmp_path):
    folder, checker, training = guard
    schedule = GuidanceSchedule(attempts_per_level=3)  # 3 draws per request: the first and 2 redraws
    copies = {1: training[0], 3: training[5][:, :, ::-1].copy()}  # first draw of requests 1 and 3: a copy and a mirror image
    stubborn = {derive_seed(5, a) for a in range(schedule.total_attempts)}  # request 5: a copy at every draw
    sampler = PlantingSampler(tiny_sampler(), lambda seed, _: copies.get(seed, training[2] if seed in stubborn else None))
    workflow = GenerationWorkflow(sampler, generation_requests(8), batch_size=4, schedule=schedule)
    GuardedRelease(folder, workflow, tmp_path / "release", "png").attach(workflow)
    workflow.run()

    release = tmp_path / "release"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "release.items.csv", "release.salt"]  # no staging folder left
    assert {"audit.csv", "draws.csv", "summary.json", "distances.png", "manifest.json", "images"} <= {p.name for p in release.iterdir()}
    assert_certified(release, checker, training)
    summary = json.loads((release / "summary.json").read_text())
    counts, generation, draws, items = summary["counts"], summary["generation"], draw_rows(release), item_rows(release)
    assert set(summary["checks"]) == {"pixel", "pixel-tiles", "copy", "copy-regions"} and len(items) == counts["requested"] == 8
    assert [read_item_map(release)[i] for i in generation["dropped"]] == ["synthetic-00005"] and counts["dropped"] == 1 == counts["too_close"]
    assert [r["outcome"] for r in draws["synthetic-00005"]] == ["redrawn", "redrawn", "dropped"]  # bounded: 3 draws
    assert items["synthetic-00005"]["released"] == "false" and items["synthetic-00005"]["draws"] == "3"
    assert all(len(r) <= schedule.total_attempts and int(items[i]["draws"]) == len(r) for i, r in draws.items())
    assert counts["draws"] == sum(len(r) for r in draws.values()) == generation["counts"]["checks"]
    for planted in ("synthetic-00001", "synthetic-00003"):
        assert draws[planted][0]["outcome"] == "redrawn" and float(draws[planted][0]["nn_distance"]) < float(draws[planted][0]["threshold"])
    assert generation["counts"]["first_attempt_rejected"] >= 3
    assert generation["counts"]["regenerated"] == sum(r["outcome"] == "redrawn" for v in draws.values() for r in v)
    for row in items.values():  # the decision rule, row by row, for the deciding check and for every check
        assert (float(row["nn_distance"]) >= float(row["threshold"])) == (row["released"] == "true")
        assert (row["released"] == "true") == all(row[f"{c}_decision"] == "pass" for c in ("pixel", "pixel-tiles"))
    manifest = json.loads((release / "manifest.json").read_text())
    released = manifest_items(release)
    assert counts["released"] == len(released) == 8 - counts["dropped"] and "synthetic-00005" not in released
    assert all(released[i]["attempt"] >= 1 for i in ("synthetic-00001", "synthetic-00003") if i in released)
    assert manifest["index_fingerprint"] == checker.checks[0].index_fingerprint and manifest["threshold"] == checker.checks[0].tau
    entries = verify_ledger(folder / "pixel" / "index")
    assert entries[-1].command == "generate" and entries[-1].release_path == str(release.resolve())
    print(f"\nrequested 8: released {counts['released']}, redrawn {generation['counts']['regenerated']}, dropped {counts['dropped']}, "
          f"rejection rate {generation['rejection_rate']:.0%}, tau {checker.taus}")


def test_a_failed_run_releases_nothing(guard, tmp_path):
    folder, checker, training = guard
    workflow = GenerationWorkflow(PlantingSampler(tiny_sampler(), lambda seed, _: np.full((1, 16, 16), np.nan) if seed == 6 else None),
                                  generation_requests(8), batch_size=4)
    entries = len(verify_ledger(folder / "pixel" / "index"))
    GuardedRelease(folder, workflow, tmp_path / "release", "png").attach(workflow)
    with pytest.raises(Exception, match="NaN"):
        workflow.run()  # the first batch passed; the second holds a NaN image
    assert list(tmp_path.iterdir()) == [] and len(verify_ledger(folder / "pixel" / "index")) == entries


def test_diversity_scheme_lowers_guidance_before_dropping(guard, tmp_path):
    folder, checker, training = guard
    datalist = [{"item_id": r.item_id, "image": load_image(r)} for r in load_source(SOURCE).split("train")][:4]
    requests = diversity_requests(datalist, seed=10, guidance_scale=3.0, transform=lambda d: dict(d, features=pooled_features(d["image"])))
    schedule = GuidanceSchedule(start=3.0, floor=1.0, step=1.0, attempts_per_level=1)
    sources = {r["seed"]: d["image"] for r, d in zip(requests, datalist)}
    # memorisation at high guidance: above the floor, the draw of every other request is its own training image
    def plant(seed, scale):
        for s, image in sources.items():
            if (s - 10) % 2 == 0 and scale > 1.0 and seed in {derive_seed(s, a) for a in range(schedule.total_attempts)}:
                return image
        return None
    workflow = GenerationWorkflow(PlantingSampler(tiny_sampler(context_dim=16), plant), requests, batch_size=4, schedule=schedule)
    GuardedRelease(folder, workflow, tmp_path / "release", "png", record=False).attach(workflow)
    workflow.run()

    release = tmp_path / "release"
    assert_certified(release, checker, training)
    items = manifest_items(release)
    assert not any("source_item" in i or "condition" in i for i in items.values())  # training ids and pooled pixels stay out
    assert_nothing_identifying(release, training)
    disclosed = GenerationWorkflow(PlantingSampler(tiny_sampler(context_dim=16), plant), requests, batch_size=4, schedule=schedule)
    GuardedRelease(folder, disclosed, tmp_path / "disclosed", "png", record=False, disclose_ids=True).attach(disclosed)
    disclosed.run()
    with pytest.raises(AssertionError):  # the check finds what a release that discloses its requests holds
        assert_nothing_identifying(tmp_path / "disclosed", training)
    for k, request in enumerate(requests):
        rows = draw_rows(release)[request["item_id"]]
        if k % 2 == 0:  # copies at 3.0 and 2.0, released at the floor (or dropped there)
            assert [r["outcome"] for r in rows[:2]] == ["redrawn", "redrawn"] and len(rows) == 3
            assert request["item_id"] not in items or items[request["item_id"]]["guidance_scale"] == 1.0


@pytest.fixture(scope="module")
def trained_bundles(tmp_path_factory, guard):
    """The ldm_2d bundle trained at tiny size, plain and with configs/diversity.json, each with the guard in privacy/."""
    folder, _, _ = guard
    bundles = {}
    for name, extra in (("plain", []), ("diversity", ["diversity"])):
        root = tmp_path_factory.mktemp(name) / "ldm_2d"
        shutil.copytree(BUNDLES / "ldm_2d", root, ignore=shutil.ignore_patterns(*TRAINED_OUTPUTS))  # not the shipped weights and guard
        configure_bundle(root, TINY_BUNDLE)  # as the demo does: later runs rebuild the tiny networks
        files = [str(root / "configs" / f"{c}.json") for c in ("train_autoencoder", "train_diffusion", *extra)]
        run(config_file=files[:1])
        run(config_file=files)
        shutil.copytree(folder, root / "privacy", ignore=shutil.ignore_patterns("ledger*"))
        bundles[name] = root
    return bundles


def _invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_generate_cli_and_gate_share_the_ledger_and_the_cumulative_audit_reads_it(trained_bundles, guard, tmp_path):
    _, checker, training = guard
    bundle = trained_bundles["plain"]
    index = bundle / "privacy" / "pixel" / "index"
    output = _invoke("generate", "--bundle", bundle, "--n", 4, "--out", tmp_path / "generated", "--steps", 2)
    assert "released" in output and "pixel " in output.split("tau: ", 1)[-1].splitlines()[0] and str(tmp_path / "generated" / "audit.csv") in output
    assert_certified(tmp_path / "generated", checker, training)
    assert (tmp_path / "generated.salt").is_file()

    candidates = "phantom:2d?patients=4&acquisitions=1&size=16&seed=77"
    output = _invoke("gate", candidates, "--out", tmp_path / "gated", "--guard", bundle / "privacy")
    assert "ledger:  entry 2" in output
    entries = verify_ledger(index)
    assert [(e.seq, e.command) for e in entries] == [(1, "generate"), (2, "gate")]
    assert [e.release_path for e in entries] == [str((tmp_path / "generated").resolve()), str((tmp_path / "gated").resolve())]
    assert not (bundle / "privacy" / "pixel-tiles" / "index" / "ledger.jsonl").exists()  # the primary index keeps the ledger

    output = _invoke("audit", "--cumulative", "--index", index, "--holdout", SOURCE, "--control", SOURCE, "--out", tmp_path / "audit", "--bootstrap", 100)
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert [e["seq"] for e in report["ledger_entries"]] == [1, 2] and report["conclusion"] in output


def test_bundle_inference_config_runs_through_monai_bundle_run(trained_bundles, guard, tmp_path, monkeypatch):
    _, checker, training = guard
    bundle = trained_bundles["plain"]
    monkeypatch.chdir(tmp_path)  # bundle_root comes from the config location
    files = [str(bundle / "configs" / f"{c}.json") for c in ("train_autoencoder", "train_diffusion", "inference")]
    run(config_file=files, n=3, num_inference_steps=2, output_dir=str(tmp_path / "release"), record_in_ledger=False)
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["command"] == "generate" and set(manifest["checks"]) == {"pixel", "pixel-tiles", "copy", "copy-regions"}
    assert set(manifest["provenance"]["checkpoints"]) == {"autoencoder", "diffusion"} and manifest["counts"]["requested"] == 3
    assert_certified(tmp_path / "release", checker, training)


def test_generate_cli_diversity_one_image_per_training_image(trained_bundles, guard, tmp_path):
    _, checker, training = guard
    _invoke("generate", "--bundle", trained_bundles["diversity"], "--diversity", "--n", 3, "--out", tmp_path / "release", "--steps", 2)
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    first = [r.item_id for r in load_source(SOURCE).split("train")][:3]
    assert manifest["counts"]["requested"] == 3 and sorted(read_item_map(tmp_path / "release").values()) == sorted(f"synthetic-{i}" for i in first)
    assert_certified(tmp_path / "release", checker, training)
    assert_nothing_identifying(tmp_path / "release", training)


def _numeric_arrays(value) -> list[np.ndarray]:
    """Every list of 4 or more numbers inside a JSON document."""
    if isinstance(value, dict):
        return [a for v in value.values() for a in _numeric_arrays(v)]
    if isinstance(value, list):
        if len(value) >= 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [np.asarray(value, np.float64)]
        return [a for v in value for a in _numeric_arrays(v)]
    return []


def assert_nothing_identifying(release: Path, training: np.ndarray) -> None:
    """No byte of any release file holds a training item or patient id, and no JSON array is a training image's
    pixels or pooled pixels (the diversity scheme's conditioning)."""
    records = load_source(SOURCE).records
    secrets = {r.item_id for r in records} | {r.patient_id for r in records}
    files = [p for p in release.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for path in files:
        content = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in content]
        assert not leaked, (path.name, leaked[:3])
    fingerprints = [torch.as_tensor(image).reshape(-1).numpy().astype(np.float64) for image in training]
    fingerprints += [pooled_features(torch.as_tensor(image), grid).numpy().astype(np.float64) for image in training for grid in (2, 4, 8)]
    for path in release.glob("*.json"):
        for array in _numeric_arrays(json.loads(path.read_text())):
            assert not any(f.shape == array.shape and np.allclose(f, array, atol=1e-3) for f in fingerprints), path.name


def test_generate_refuses_a_bundle_without_its_guard(trained_bundles, tmp_path):
    bundle = tmp_path / "ldm_2d"
    shutil.copytree(trained_bundles["plain"], bundle, ignore=shutil.ignore_patterns("privacy"))
    result = CliRunner().invoke(main, ["generate", "--bundle", str(bundle), "--n", "2", "--out", str(tmp_path / "release")])
    assert result.exit_code == 2 and "guard description not found" in result.output
    assert not (tmp_path / "release").exists() and not (tmp_path / "release.salt").exists()


def test_generate_refuses_checkpoints_that_do_not_fit_the_configs(trained_bundles, tmp_path):
    result = CliRunner().invoke(main, ["generate", "--bundle", str(trained_bundles["plain"]), "--diversity", "--n", "2", "--out", str(tmp_path / "release")])
    assert result.exit_code == 2 and "checkpoints do not fit the networks" in result.output
    assert not (tmp_path / "release").exists() and not (tmp_path / "release.salt").exists()
