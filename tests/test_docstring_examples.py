"""Every ``Examples`` section in the package runs and prints what it shows (the docs cannot drift from the code)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import monai_pso

pytestmark = pytest.mark.usefixtures("one_thread")

MODULES = sorted(info.name for info in pkgutil.walk_packages(monai_pso.__path__, "monai_pso.") if not info.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run: python -m pytest --doctest-modules {module.__file__})"
