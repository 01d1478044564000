"""The set-up commands: ``make demo`` installs the package alone, ``make test`` (what ``.ci/run`` calls, and
nothing else) installs the system packages and the test extra first; dry runs, nothing installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def dry_run(target: str, venv: Path, *variables: str) -> list[str]:
    """The commands ``make -n TARGET`` would run with a fresh ``VENV`` on a machine without a GPU.

    The environment of an enclosing ``make test`` (MAKEFLAGS, MAKELEVEL) is dropped, so that the sub-make
    does not print its "Entering directory" lines among the commands."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAKE") and name != "MFLAGS"}
    command = ["make", "--no-print-directory", "-n", target, f"VENV={venv}", "HAS_GPU=", "SYSTEM_DEPS=", *variables]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_demo_installs_the_package_without_the_test_extra(tmp_path):
    commands = dry_run("demo", tmp_path / "venv")
    installs = [line for line in commands if "pip install -e" in line]
    assert installs == [f'{tmp_path / "venv"}/bin/pip install -e "."']
    assert not any("install-system-deps" in line for line in commands) and commands[-1].endswith("monai-pso demo")


def test_test_installs_system_packages_and_the_test_extra_then_lints_and_tests(tmp_path):
    commands = dry_run("test", tmp_path / "venv")
    assert commands[0] == ".ci/install-system-deps"
    assert any(line.endswith('pip install -e ".[test]"') for line in commands)
    assert "touch" in commands[-3] and ".installed-demo" in commands[-3]  # the test install serves the demo too
    assert commands[-2].endswith("ruff check .") and "-m pytest" in commands[-1]
    assert not any("install-system-deps" in line for line in dry_run("test", tmp_path / "venv", "SYSTEM_DEPS=skip"))


def test_an_installed_venv_is_not_installed_again(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for stamp in (".installed-demo", ".installed-test"):
        (venv / "bin" / stamp).touch()
    assert not any("pip install" in line for line in dry_run("test", venv) + dry_run("demo", venv))


def test_ci_runs_exactly_make_test():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == "make test" and not any("install-system-deps" in line for line in lines)
