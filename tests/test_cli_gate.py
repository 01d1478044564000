"""``monai-pso index build`` / ``calibrate`` / ``gate`` end to end on the phantom, and refusals of bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from monai_pso.cli.main import main
from monai_pso.data import load_source
from monai_pso.index.storage import read_manifest
from monai_pso.io import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINING = "phantom:2d?patients=20&acquisitions=3&size=32&seed=4"  # 10 patients left 6 held-out images: too few for the copy checks' tau


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("guard")
    for name, extra in (("pixel", ()), ("tiles", ("--tiles", "3"))):
        result = _invoke("index", "build", TRAINING, "--out", folder / name / "index", *extra)
        assert result.exit_code == 0, result.output
        result = _invoke("calibrate", folder / name / "index", "--holdout", TRAINING, "--out", folder / name / "threshold.json", "--n-bootstrap", "100")
        assert result.exit_code == 0, result.output
        assert "tau =" in result.output and "utility cost" in result.output
    return folder


def _gate_args(guard_dir: Path, candidates: str, out: Path, *, swap: bool = False) -> list:
    names = ("pixel", "tiles")
    thresholds = names[::-1] if swap else names
    args = ["gate", candidates, "--out", out]
    for name, threshold in zip(names, thresholds):
        args += ["--index", guard_dir / name / "index", "--threshold", guard_dir / threshold / "threshold.json"]
    return args


def _candidates(folder: Path) -> dict[str, str]:
    """PNG candidates: copies of 4 training images (as 8-bit files) and 6 images of unseen patients."""
    folder.mkdir()
    kinds = {}
    training = load_source(TRAINING).split("train")
    unseen = load_source("phantom:2d?patients=6&acquisitions=1&size=32&seed=41")
    for i, record in enumerate(list(training)[:4] + list(unseen)):
        name = f"cand-{i:02d}"
        Image.fromarray(np.round(record.image[0] * 255).astype(np.uint8)).save(folder / f"{name}.png")
        kinds[name] = "copy" if i < 4 else "unseen"
    return kinds


def test_gate_releases_only_passing_images(guard_dir, tmp_path):
    kinds = _candidates(tmp_path / "candidates")
    out = tmp_path / "release"
    result = _invoke(*_gate_args(guard_dir, str(tmp_path / "candidates"), out))
    assert result.exit_code == 0, result.output
    from monai_pso.release import read_item_map

    original = read_item_map(out)
    rows = list(csv.DictReader((out / "audit.csv").open()))
    assert {"item", "nn_distance", "threshold", "released", "nearest_patient_hash"} <= set(rows[0])
    assert sorted(original[r["item"]] for r in rows) == sorted(kinds) and not set(kinds) & {r["item"] for r in rows}  # opaque ids
    released = {original[r["item"]] for r in rows if r["released"] == "true"}
    assert all(kinds[item] == "unseen" for item in released) and released  # every copy rejected, some unseen released
    assert all((float(r["nn_distance"]) >= float(r["threshold"])) == (r["released"] == "true") for r in rows)
    files = sorted(original[p.stem] for p in (out / "images").rglob("*.png"))
    assert files == sorted(released)
    manifest = json.loads((out / "manifest.json").read_text())
    rejected = 10 - len(released)
    assert manifest["counts"] == {"requested": 10, "released": len(released), "too_close": rejected, "implausible": 0, "dropped": rejected, "draws": 10}  # no plausibility check with --index
    assert all(sha256_file(out / f["path"]) == f["sha256"] for f in manifest["files"]) and len(manifest["files"]) == len(released)
    assert set(manifest["checks"]) == {"pixel", "pixel-tiles"}
    assert {"summary.json", "distances.png"} <= {p.name for p in out.iterdir()}
    assert (tmp_path / "release.salt").stat().st_mode & 0o077 == 0  # the salt stays private, beside the release
    assert (tmp_path / "release.items.csv").stat().st_mode & 0o077 == 0  # so does the map of opaque ids
    training_ids = {r.patient_id for r in load_source(TRAINING)}
    assert not any(pid in (out / "audit.csv").read_text() for pid in training_ids)
    print(f"\nCLI gate: released {len(released)} of 6 unseen, 0 of 4 copies")


def _nifti_folder(folder: Path, images: list[np.ndarray]) -> str:
    folder.mkdir()
    for i, image in enumerate(images):
        nib.save(nib.Nifti1Image(image[0], np.eye(4)), str(folder / f"c{i}.nii.gz"))
    return f"{folder}?normalize=none"


@pytest.mark.parametrize("problem", ["nan", "shape", "empty_index", "other_embedder"])
def test_bad_input_releases_nothing(guard_dir, tmp_path, problem):
    fresh = [r.image for r in load_source("phantom:2d?patients=3&acquisitions=1&size=32&seed=8")]
    candidates = _nifti_folder(tmp_path / "cands", fresh)
    if problem == "nan":
        bad = fresh[0].copy()
        bad[0, 5, 5] = np.nan
        nib.save(nib.Nifti1Image(bad[0], np.eye(4)), str(tmp_path / "cands" / "c9.nii.gz"))
    elif problem == "shape":
        candidates = "phantom:2d?patients=3&acquisitions=1&size=16&seed=8"
    out = tmp_path / "release"
    args = _gate_args(guard_dir, candidates, out, swap=problem == "other_embedder")
    if problem == "empty_index":
        (tmp_path / "empty").mkdir()
        args[args.index(guard_dir / "pixel" / "index")] = tmp_path / "empty"
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".release*")) and not (tmp_path / "release.salt").exists()
    print(f"\n{problem}: {errors[0]}")


def test_dicom_release_certifies_the_written_file(guard_dir, tmp_path):
    import pydicom

    from monai_pso.guard import load_checker

    candidates = "phantom:2d?patients=6&acquisitions=1&size=32&seed=41&modality=xray"
    out = tmp_path / "release"
    result = _invoke(*_gate_args(guard_dir, candidates, out), "--format", "dicom")
    assert result.exit_code == 0, result.output
    rows = {r["item"]: r for r in csv.DictReader((out / "audit.csv").open())}
    written = sorted((out / "images").glob("*.dcm"))
    assert written and len(written) == sum(r["released"] == "true" for r in rows.values())
    checker = load_checker(index=[guard_dir / n / "index" for n in ("pixel", "tiles")], threshold=[guard_dir / n / "threshold.json" for n in ("pixel", "tiles")])
    images = np.stack([pydicom.dcmread(p).pixel_array[None].astype(np.float64) / 4095.0 for p in written]).astype(np.float32)
    decisions = checker.decide(images)  # the files as written, read back
    assert decisions.released.all()
    assert [float(rows[p.stem]["nn_distance"]) for p in written] == decisions.nn_distance.tolist()


def test_index_build_keeps_the_release_ledger_of_the_index_it_replaces(tmp_path):
    from monai_pso.release.ledger import append_entry, verify_ledger

    index_dir = tmp_path / "index"
    assert _invoke("index", "build", TRAINING, "--out", index_dir).exit_code == 0
    entry = append_entry(index_dir, {"command": "gate", "release_path": "/releases/r1"})
    result = _invoke("index", "build", TRAINING, "--out", index_dir, "--tiles", "3")
    assert result.exit_code == 2 and "--keep-ledger" in result.output and "Traceback" not in result.output
    assert verify_ledger(index_dir) == [entry]
    result = _invoke("index", "build", TRAINING, "--out", index_dir, "--tiles", "3", "--keep-ledger")
    assert result.exit_code == 0, result.output
    assert verify_ledger(index_dir) == [entry] and read_manifest(index_dir)["embedder"]["settings"]["tiles"] == 3


@pytest.fixture(scope="module")
def built_guard(tmp_path_factory) -> Path:
    """``monai-pso guard build``: every default check in one folder."""
    folder = tmp_path_factory.mktemp("built") / "guard"
    result = _invoke("guard", "build", TRAINING, "--out", folder, "--bootstrap", "100", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "pixel:" in result.output and "pixel-tiles:" in result.output and f"--guard {folder}" in result.output
    return folder


def test_guard_build_then_gate_with_the_guard_folder(built_guard, tmp_path):
    from monai_pso.guard import read_guard
    from monai_pso.release import open_release, read_item_map
    from monai_pso.release.ledger import verify_ledger

    described = read_guard(built_guard)
    assert [c["name"] for c in described["checks"]][:4] == ["pixel", "pixel-tiles", "copy", "copy-regions"] and all(c["tau"] > 0 for c in described["checks"])
    kinds = _candidates(tmp_path / "candidates")
    result = _invoke("gate", tmp_path / "candidates", "--guard", built_guard, "--out", tmp_path / "release", "--threads", "1")
    assert result.exit_code == 0, result.output
    release = open_release(tmp_path / "release")  # the one schema check
    original = read_item_map(tmp_path / "release")
    assert sorted(original[r["item"]] for r in release.rows) == sorted(kinds)  # one row per candidate
    assert all(kinds[original[item]] == "unseen" for item in release.released_items) and release.released_items
    assert release.counts["too_close"] >= 4 and release.counts["requested"] == 10
    for row in release.rows:
        per_check = [float(row[f"{c['name']}_distance"]) >= float(row[f"{c['name']}_tau"]) for c in described["checks"]]
        plausible = row["plausibility_decision"] != "fail"  # empty when the guard has no plausibility check
        assert (row["released"] == "true") == (all(per_check) and plausible) == (float(row["nn_distance"]) >= float(row["threshold"]) and plausible)
    entries = verify_ledger(built_guard / "pixel" / "index")
    assert entries[-1].release_path == str((tmp_path / "release").resolve()) and "audit.csv" in entries[-1].files


def test_gate_needs_a_guard_or_indexes(tmp_path):
    result = _invoke("gate", TRAINING, "--out", tmp_path / "release")
    assert result.exit_code == 2 and "give a guard folder" in result.output and not (tmp_path / "release").exists()
