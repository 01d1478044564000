"""``monai-pso audit`` end to end: index on disk, release folders, report files, ledger and cumulative audit,
and the HTML report rendered by headless Chromium (skipped when Chromium is absent)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from monai_pso.cli.main import main
from monai_pso.data import load_image, load_source
from monai_pso.embed.pixel import PixelEmbedder
from monai_pso.index import ReferenceIndex, build_index
from monai_pso.release.ledger import LEDGER_FILE, append_release

SOURCE = "phantom:2d?patients=60&acquisitions=2&size=32&ratios=0.5,0.25,0.25"
REQUIRED_KEYS = {
    "dcr_auc", "dcr_auc_ci", "dcr_close_share", "dcr_close_share_ci", "dcr_p_value", "singling_out_risk", "singling_out_risk_ci",
    "membership_auc", "membership_auc_ci", "copy_rate", "counts", "fingerprints", "conclusion",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def write_release(folder: Path, records, index_fingerprint: str, threshold: float) -> Path:
    """A release folder as the gate writes one: PNG images and a manifest with their sha256."""
    folder.mkdir(parents=True)
    files = {}
    for record in records:
        name = f"{record.item_id}.png"
        Image.fromarray(np.round(load_image(record)[0] * 255).astype(np.uint8)).save(folder / name)
        files[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    manifest = {"threshold": threshold, "index": {"fingerprint": index_fingerprint}, "embedder": {"fingerprint": None}, "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    index = build_index(SOURCE, PixelEmbedder(), progress=False)
    index.save(root / "index")
    fingerprint = index.fingerprint
    training = load_source(SOURCE).split("train").records
    write_release(root / "release-1", training[::2], fingerprint, threshold=0.004)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "release-1" / "distances.png")  # a plot, not in the manifest
    write_release(root / "release-2", training[1::2], fingerprint, threshold=0.004)
    return root


def run_cli(*args: str):
    return CliRunner().invoke(main, ["audit", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def report_dir(workspace):
    out = workspace / "report"
    result = run_cli(workspace / "release-1", "--index", workspace / "index", "--holdout", SOURCE, "--control", SOURCE, "--out", out, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("significant leakage detected")
    return out


def test_report_json_has_every_figure(report_dir, workspace):
    report = json.loads((report_dir / "report.json").read_text())
    assert REQUIRED_KEYS <= set(report)
    assert report["dcr_p_value"] < 0.05 and report["singling_out_risk_ci"][0] > 0 and report["membership_auc_ci"][0] > 0.5
    assert report["threshold"] == 0.004 and report["independent_of_guard"] is True
    assert report["fingerprints"]["index"] == ReferenceIndex.load(workspace / "index").fingerprint
    embedders = {row["embedder"] for row in report["copy_rate"]}
    assert len(embedders) == 2  # the audit embedding and the guard's, which also gets the tau row
    assert [row["level"] for row in report["copy_rate"]].count("tau") == 1
    assert report["counts"]["released_images"] == 30 and report["counts"]["training_patients"] == 30
    assert sorted(p.name for p in report_dir.iterdir()) == ["report.html", "report.json", "report.md"]
    assert "**Conclusion:** significant leakage" in (report_dir / "report.md").read_text()


def test_report_is_replaced_atomically(report_dir, workspace):
    before = (report_dir / "report.json").read_text()
    result = run_cli(workspace / "release-1", "--index", workspace / "index", "--holdout", SOURCE, "--control", SOURCE, "--out", report_dir, "--bootstrap", 100, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert json.loads((report_dir / "report.json").read_text())["settings"]["seed"] == 1 != json.loads(before)["settings"]["seed"]
    assert not [p for p in report_dir.parent.iterdir() if p.name.startswith(".report")]


def test_html_is_self_contained(report_dir):
    text = (report_dir / "report.html").read_text()
    sources = [part.split('"', 1)[0] for part in text.split('src="')[1:]]
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)  # 4 privacy + 2 fidelity figures
    assert all(base64.b64decode(s.split(",", 1)[1])[:4] == b"\x89PNG" for s in sources)
    assert "http://" not in text and "https://" not in text and "<link" not in text and "<script" not in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    url = (report_dir / "report.html").as_uri()
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2000", url, profile=tmp_path / "profile-1")
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert rgb.shape == (2000, 1200, 3) and rgb.std() > 10  # not a blank page
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 100).mean() > 0.005  # the red and blue of the plots: the embedded PNGs were drawn
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile-2").stdout
    assert dom.count('<img alt=') == 6 and dom.count('src="data:image/png;base64,') == 6 and "Privacy audit" in dom


def test_cumulative_audit_over_the_ledger(workspace):
    index = workspace / "index"
    for name in ("release-1", "release-2"):
        append_release(index, workspace / name, command="gate")
    out = workspace / "cumulative"
    result = run_cli("--cumulative", "--index", index, "--holdout", SOURCE, "--control", SOURCE, "--out", out, "--bootstrap", 100)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["cumulative"] is True and [e["seq"] for e in report["ledger_entries"]] == [1, 2]
    assert report["counts"]["released_images"] == 60 and report["singling_out_risk_ci"][0] > 0

    lines = (index / LEDGER_FILE).read_text().splitlines()
    (index / LEDGER_FILE).write_text("\n".join(lines[1:]) + "\n")
    result = run_cli("--cumulative", "--index", index, "--holdout", SOURCE, "--control", SOURCE, "--out", out)
    assert result.exit_code == 2 and "entry 1 is missing" in result.output and "Traceback" not in result.output
    (index / LEDGER_FILE).write_text("\n".join(lines) + "\n")


def test_usage_errors_are_one_line(workspace):
    result = run_cli("--index", workspace / "index", "--holdout", SOURCE, "--control", SOURCE, "--out", workspace / "x")
    assert result.exit_code == 2 and "--cumulative" in result.output
    result = run_cli(workspace / "release-1", "--index", workspace / "index", "--holdout", SOURCE, "--holdout-split", "train", "--control", SOURCE, "--out", workspace / "x")
    assert result.exit_code == 2 and "also in training" in result.output


def test_embedder_specifications(workspace):
    from monai_pso.audit.embedders import default_audit_embedder, guard_embedder, parse_embedder_spec

    assert parse_embedder_spec("pixel?grid=16&smoothing=0").settings["grid"] == 16
    assert parse_embedder_spec("pixel?tiles=3").tiled
    assert default_audit_embedder(2).fingerprint != PixelEmbedder().fingerprint != default_audit_embedder(3).fingerprint
    saved = workspace / "saved-embedder"
    PixelEmbedder(grid=20).save(saved)
    assert parse_embedder_spec(str(saved)).fingerprint == PixelEmbedder(grid=20).fingerprint
    settings = json.loads((workspace / "index" / "manifest.json").read_text())["embedder"]["settings"]
    assert guard_embedder(settings).fingerprint == PixelEmbedder().fingerprint


def test_chosen_embedders_and_a_wrong_training_source(workspace):
    out = workspace / "report-embedders"
    args = [workspace / "release-1", "--index", workspace / "index", "--holdout", SOURCE, "--control", SOURCE, "--out", out, "--bootstrap", 100]
    result = run_cli(*args, "--embedder", "pixel?grid=16", "--embedder", "pixel?tiles=3")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["embedder"]["fingerprint"] == PixelEmbedder(grid=16).fingerprint
    assert len({row["embedder"] for row in report["copy_rate"]}) == 3
    other_seed = SOURCE + "&seed=1"  # same item and patient ids, other pixels
    result = run_cli(*args, "--training", other_seed)
    assert result.exit_code == 2 and "differ from the images indexed" in result.output
