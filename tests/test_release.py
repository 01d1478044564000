"""The release package: one schema for gated and generated releases, the ledger written before the release is
visible, and one release written by several ranks (2 gloo processes on CPU) for ``gate`` and ``generate``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ddp_support import free_port
from monai_pso.data import load_image, load_source
from monai_pso.engines import GenerationWorkflow, generation_requests
from monai_pso.engines.bundle_runs import TRAINED_OUTPUTS, configure_bundle, train_bundle
from monai_pso.errors import MonaiPsoError
from monai_pso.guard import audit_columns, build_guard
from monai_pso.release import GuardedRelease, gate_source, open_release, read_item_map
from monai_pso.release.ledger import verify_ledger
from test_generate import BUNDLES, SOURCE, TINY_BUNDLE, PlantingSampler, tiny_sampler

pytestmark = pytest.mark.usefixtures("one_thread")

CANDIDATES = "phantom:2d?patients=6&acquisitions=1&size=16&seed=21"


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("release") / "guard"
    # release plumbing only: without the copy checks, whose tau from this 10-patient phantom's few held-out
    # images refuses the unseen candidates too (tests/test_copy_check.py covers them)
    build_guard(SOURCE, folder, n_bootstrap=50, progress=False, copy_check=False)
    return folder


def _nifti_candidates(folder: Path, nan_at: int | None = None) -> str:
    """Unseen phantom images as NIfTI files ``c0..c5``; with ``nan_at``, that one holds a NaN."""
    folder.mkdir(parents=True)
    for i, record in enumerate(load_source(CANDIDATES)):
        image = load_image(record)[0].copy()
        if i == nan_at:
            image[3, 3] = np.nan
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / f"c{i}.nii.gz"))
    return f"{folder}?normalize=none"


def test_gated_and_generated_releases_have_one_schema(guard_dir, tmp_path):
    from monai_pso.guard import load_checker

    checker = load_checker(guard_dir)
    gated = gate_source(CANDIDATES, checker, tmp_path / "gated", progress=False)
    training = load_image(load_source(SOURCE).split("train").records[0])
    workflow = GenerationWorkflow(PlantingSampler(tiny_sampler(), lambda seed, _: training if seed == 1 else None), generation_requests(4), batch_size=2)
    GuardedRelease(guard_dir, workflow, tmp_path / "generated", "png").attach(workflow)
    workflow.run()

    releases = [open_release(tmp_path / "gated"), open_release(tmp_path / "generated")]  # both pass the one check
    assert releases[0].columns == releases[1].columns == list(audit_columns(["pixel", "pixel-tiles"]))
    assert set(releases[0].summary) == set(releases[1].summary) and set(releases[0].manifest) == set(releases[1].manifest)
    assert [r.counts["requested"] for r in releases] == [6, 4] and gated.counts == releases[0].counts
    assert releases[1].counts["draws"] > 4  # the planted copy was redrawn
    assert releases[0].summary["generation"] is None and releases[1].summary["generation"]["counts"]["regenerated"] >= 1
    assert [e.command for e in verify_ledger(guard_dir / "pixel" / "index")][-2:] == ["gate", "generate"]


def test_schema_check_refuses_a_tampered_release(guard_dir, tmp_path):
    from monai_pso.guard import load_checker

    gate_source(CANDIDATES, load_checker(guard_dir), tmp_path / "release", progress=False)
    audit = tmp_path / "release" / "audit.csv"
    lines = audit.read_text().splitlines()
    audit.write_text("\n".join([lines[0], *lines[1:], lines[1]]) + "\n")  # an item listed twice
    with pytest.raises(MonaiPsoError, match="twice"):
        open_release(tmp_path / "release")


def test_a_failed_ledger_append_publishes_nothing(guard_dir, tmp_path, monkeypatch):
    from monai_pso.guard import load_checker
    from monai_pso.release import builder

    before = verify_ledger(guard_dir / "pixel" / "index")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(builder, "append_entry", broken)
    with pytest.raises(OSError, match="disk full"):
        gate_source(CANDIDATES, load_checker(guard_dir), tmp_path / "release", progress=False)
    assert list(tmp_path.iterdir()) == []  # no release, no staging folder, no salt file
    assert verify_ledger(guard_dir / "pixel" / "index") == before


def _rank_worker(rank: int, world: int, port: int, arguments: list[str], results: str) -> None:
    """One rank of a ``torchrun``-like run of the CLI: the environment torchrun sets, then ``monai-pso ARGS``."""
    from click.testing import CliRunner

    from monai_pso.cli.main import main

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = CliRunner().invoke(main, arguments)
    Path(results, f"rank{rank}.json").write_text(json.dumps({"exit_code": result.exit_code, "output": result.output}))


def _run_ranks(arguments: list, tmp_path: Path) -> list[dict]:
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_rank_worker, args=(2, free_port(), [str(a) for a in arguments], str(results)), nprocs=2, join=True)
    return [json.loads((results / f"rank{r}.json").read_text()) for r in range(2)]


def test_gate_on_two_ranks_writes_one_release(guard_dir, tmp_path):
    seq = len(verify_ledger(guard_dir / "pixel" / "index"))
    ranks = _run_ranks(["gate", _nifti_candidates(tmp_path / "cands"), "--guard", guard_dir, "--out", tmp_path / "release"], tmp_path)
    assert [r["exit_code"] for r in ranks] == [0, 0], ranks
    assert "released" in ranks[0]["output"] and ranks[1]["output"] == ""  # rank 0 reports
    release = open_release(tmp_path / "release")
    assert len({r["item"] for r in release.rows}) == len(release.rows) == 6  # every candidate once, from both ranks
    assert release.counts["requested"] == 6 and release.counts["released"] == len(list((tmp_path / "release" / "images").iterdir()))
    entries = verify_ledger(guard_dir / "pixel" / "index")
    assert len(entries) == seq + 1 and entries[-1].release_path == str((tmp_path / "release").resolve())


def test_a_failure_on_one_rank_publishes_nothing(guard_dir, tmp_path):
    seq = len(verify_ledger(guard_dir / "pixel" / "index"))
    candidates = _nifti_candidates(tmp_path / "cands", nan_at=3)  # rank 1 gates items 1, 3, 5
    ranks = _run_ranks(["gate", candidates, "--guard", guard_dir, "--out", tmp_path / "release"], tmp_path)
    assert [r["exit_code"] for r in ranks] == [2, 2], ranks
    assert "NaN" in ranks[1]["output"] and "rank 1 failed" in ranks[0]["output"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cands", "results"]  # no release, staging, salt or id map
    assert len(verify_ledger(guard_dir / "pixel" / "index")) == seq


def trained_tiny_bundle(bundle: Path, guard_dir: Path, **settings) -> Path:
    """The ldm_2d bundle trained at 16 x 16 in seconds, with a copy of ``guard_dir`` (no ledger) as its guard."""
    shutil.copytree(BUNDLES / "ldm_2d", bundle, ignore=shutil.ignore_patterns(*TRAINED_OUTPUTS))  # not the shipped weights and guard
    configure_bundle(bundle, {**TINY_BUNDLE, **settings})
    train_bundle(bundle, quiet=True)
    shutil.copytree(guard_dir, bundle / "privacy", ignore=shutil.ignore_patterns("ledger*"))
    return bundle


def test_generate_on_two_ranks_writes_one_release(guard_dir, tmp_path):
    bundle = trained_tiny_bundle(tmp_path / "ldm_2d", guard_dir)
    ranks = _run_ranks(["generate", "--bundle", bundle, "--n", 5, "--out", tmp_path / "release", "--steps", 2], tmp_path)
    assert [r["exit_code"] for r in ranks] == [0, 0], ranks
    release = open_release(tmp_path / "release")
    original = read_item_map(tmp_path / "release")
    assert sorted(original[r["item"]] for r in release.rows) == [f"synthetic-{i:05d}" for i in range(5)]  # both ranks' requests, once each
    assert release.counts["draws"] == release.summary["generation"]["counts"]["checks"] >= 5
    assert len(verify_ledger(bundle / "privacy" / "pixel" / "index")) == 1
