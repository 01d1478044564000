"""Build hook: the wheel ships the repository's ``bundles/`` as package data ``monai_pso/bundles/``.

The bundles stay at the repository root (where tests, docs and ``python -m monai.bundle`` name them as
``bundles/NAME``); everything else about the package is in ``pyproject.toml``. An editable install copies
nothing: :func:`monai_pso.engines.bundle_runs.bundles_folder` finds the checkout's ``bundles/`` instead.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLES = Path(__file__).resolve().parent / "bundles"


#: Folders that running a bundle in place leaves in it (a release, downstream outputs): never shipped. Its
#: ``models/`` (the small trained weights) and ``privacy/`` (the default guard) are.
RUN_OUTPUTS = ("release", "runs")


def _shipped(folder: Path) -> list[Path]:
    """The files of ``folder``, less caches, hidden files and the bundles' run outputs."""
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.suffix not in (".pyc", ".pyo")
        and not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(folder).parts)
        and not (len(path.relative_to(folder).parts) > 2 and path.relative_to(folder).parts[1] in RUN_OUTPUTS)
    ]


class BuildPyWithBundles(build_py):
    """``build_py`` that also copies ``bundles/`` to ``monai_pso/bundles/`` of the build (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode or not BUNDLES.is_dir():
            return
        target = Path(self.build_lib) / "monai_pso" / "bundles"
        for path in _shipped(BUNDLES):
            destination = target / path.relative_to(BUNDLES)
            self.mkpath(str(destination.parent))
            self.copy_file(str(path), str(destination))


setup(cmdclass={"build_py": BuildPyWithBundles})
