"""The command line starts without torch, lists every command, and each computing command takes --threads."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from monai_pso.cli import options
from monai_pso.cli.main import COMMANDS, main

#: Commands that compute (embed, search, train, generate) and so take the shared --threads option
#: (gate, generate and guard build get it with the rewrite of their modules).
COMPUTING_COMMANDS = ("index build", "calibrate", "audit", "embed train", "demo", "study", "gate", "generate", "guard build")


def _python(code: str) -> str:
    """Stdout of ``code`` run by a fresh interpreter (fails the test on a non-zero exit)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _command(path: str) -> click.Command:
    """The click command at ``path`` ("embed train") under ``monai-pso``."""
    command: click.Command = main
    for name in path.split():
        assert isinstance(command, click.Group), f"{path}: {command.name} has no subcommands"
        assert name in command.commands, f"{path}: no command {name!r}"
        command = command.commands[name]
    return command


def test_importing_the_cli_does_not_import_torch():
    assert _python("import monai_pso.cli.main, sys; print('torch' in sys.modules)") == "False"


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "monai_pso", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.partition("Commands:")[2].splitlines() if line.strip()}
    assert listed == {name for _, name in COMMANDS}


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from monai_pso.cli.main import main\n"
        "def helps(command, path):\n"
        "    main([*path, '--help'], standalone_mode=False)\n"
        "    for name, sub in getattr(command, 'commands', {}).items():\n"
        "        helps(sub, [*path, name])\n"
        "helps(main, [])\n"
        "print('torch' in sys.modules)\n"
    )
    assert _python(code).splitlines()[-1] == "False"


def test_commands_table_names_click_commands():
    for module, name in COMMANDS:
        assert isinstance(getattr(importlib.import_module(module), name), click.Command), f"{module}.{name}"


@pytest.mark.parametrize("path", COMPUTING_COMMANDS)
def test_computing_command_takes_the_shared_threads_option(path):
    threads = {param.name: param for param in _command(path).params}.get("threads")
    assert threads is not None, f"monai-pso {path} has no --threads"
    assert threads.opts == ["--threads"] and threads.default == 1 and isinstance(threads.type, click.IntRange)


@pytest.mark.parametrize(
    ("copy", "origin", "name"),
    [
        (options.SPLITS, "monai_pso.data.records", "SPLITS"),
        (options.THRESHOLD_RULES, "monai_pso.calibrate.threshold", "RULES"),
        (options.IMAGE_FORMATS, "monai_pso.data.image_files", "FORMATS"),
        (options.TASKS, "monai_pso.downstream.tasks", "TASKS"),
        (options.TASK_MODES, "monai_pso.downstream.tasks", "MODES"),
        (options.DEFAULT_LDM_STEPS, "monai_pso.downstream.synthetic", "DEFAULT_LDM_STEPS"),
    ],
)
def test_cli_choices_match_the_library(copy, origin, name):
    assert copy == getattr(importlib.import_module(origin), name)
