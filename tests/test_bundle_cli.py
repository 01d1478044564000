"""``monai-pso bundle list`` / ``bundle export``, and the bundles shipped in the wheel (package data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from monai_pso.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"
NAMES = sorted(path.parent.parent.name for path in BUNDLES.glob("*/configs/metadata.json"))
SCHEMA = ROOT.parent / "shared" / "schema" / "meta_schema_20240725.json"


def _metadata(name: str) -> dict:
    return json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())


def test_list_shows_every_bundle_with_its_version_and_task():
    result = CliRunner().invoke(main, ["bundle", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert sorted(rows) == NAMES and len(NAMES) == 5
    for name in NAMES:
        metadata = _metadata(name)
        assert metadata["version"] in rows[name].split() and rows[name].rstrip().endswith(metadata["task"])


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")  # the offline schema has no published hash
@pytest.mark.parametrize("name", ["ldm_2d", "classification"])
def test_export_copies_a_bundle_monai_can_read(name, tmp_path):
    from monai.bundle import ConfigParser, verify_metadata

    target = tmp_path / "exported"
    result = CliRunner().invoke(main, ["bundle", "export", name, str(target)])
    assert result.exit_code == 0, result.output
    shipped = sorted(p.relative_to(BUNDLES / name) for p in (BUNDLES / name).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file()) == shipped
    assert json.loads((target / "configs" / "metadata.json").read_text()) == _metadata(name)
    parser = ConfigParser()
    parser.read_meta(str(target / "configs" / "metadata.json"))
    parser.read_config(str(target / "configs" / "inference.json"))
    assert parser.get("_meta_#version") == _metadata(name)["version"]
    if SCHEMA.is_file():  # the model-zoo schema, offline (skipped silently on a machine without ../shared)
        pytest.importorskip("jsonschema")
        verify_metadata(meta_file=str(target / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_export_to_an_empty_existing_folder(tmp_path):
    result = CliRunner().invoke(main, ["bundle", "export", "denoising", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "configs" / "train.json").is_file()


@pytest.mark.parametrize(
    ("arguments", "mentioned"),
    [(["ldm_2d", "{dir}"], "not empty"), (["no_such_bundle", "{dir}/new"], "ldm_2d")],
    ids=["non-empty-dir", "unknown-bundle"],
)
def test_export_refusals_are_one_line(arguments, mentioned, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["bundle", "export", *(a.format(dir=tmp_path) for a in arguments)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and mentioned in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing copied


@pytest.mark.slow
def test_the_wheel_ships_every_bundle_and_finds_them_installed(tmp_path):
    """Build a wheel from a copy of the checkout (nothing written into it) and run bundle_template from the unpacked wheel."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "monai_pso", source / "monai_pso", ignore=ignore)
    shutil.copytree(BUNDLES, source / "bundles", ignore=ignore)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("monai_pso-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        names = set(archive.namelist())
    shipped = {f"monai_pso/bundles/{p.relative_to(BUNDLES).as_posix()}" for p in BUNDLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    run_outputs = ("release", "runs")  # what running a bundle in place leaves: never shipped
    shipped = {name for name in shipped if name.split("/")[3] not in run_outputs}
    assert shipped <= names and {f"monai_pso/bundles/{name}/models/model.pt" for name in NAMES} <= names  # the weights ship
    in_bundles = [name.split("/") for name in names if name.startswith("monai_pso/bundles/") and name.count("/") > 3]
    assert "monai_pso/bundles/ldm_2d/privacy/guard.json" in names and not any(parts[3] in run_outputs for parts in in_bundles)
    code = "from monai_pso.engines.bundle_runs import bundle_names, bundle_template; print(bundle_template('ldm_2d')); print(bundle_names())"
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment)
    assert found.returncode == 0, found.stderr
    location, names_line = found.stdout.strip().splitlines()
    assert Path(location) == tmp_path / "site" / "monai_pso" / "bundles" / "ldm_2d"
    assert names_line == str(NAMES)
