"""The layers of docs/architecture.md, enforced: every import of a package (lazy ones included) points down.

Also: no module imports another module's private name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_pso"

#: The data flow, lowest first; a package may import itself and the packages before it.
LAYERS = ("errors", "io", "threads", "data", "embed", "index", "calibrate", "guard", "release", "audit")

#: Packages beside the flow, and what each may import.
BESIDE = {
    "engines": {"errors", "io", "threads", "data"},
    "pacs": {"errors", "io", "data", "release"},
    "downstream": {"errors", "io", "threads", "data", "embed", "index", "calibrate", "guard", "release", "engines"},
}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported monai_pso module, imported names) of every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("monai_pso") and node.level == 0:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names if alias.name.startswith("monai_pso"))
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(package: str) -> set[str]:
    if package in BESIDE:
        return BESIDE[package] | {package}
    return set(LAYERS[: LAYERS.index(package) + 1])


@pytest.mark.parametrize("package", [*LAYERS[3:], *BESIDE])
def test_imports_point_down(package):
    folder = PACKAGE / package
    assert folder.is_dir(), folder
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted(folder.rglob("*.py"))
        for line, module, _ in _imports(path)
        if _package(module) not in _allowed(package) and module != "monai_pso"
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_across_modules():
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} from {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, module, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not wrong, "\n".join(wrong)
