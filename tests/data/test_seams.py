"""The files of src/data talk through public names: none imports another module's `_private` name, and none
imports src.experiments (the layer above)."""

from __future__ import annotations

import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "src" / "data"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)


def test_no_file_of_src_data_imports_a_private_name_of_another_module():
    found = [
        f"{path.relative_to(DATA.parent.parent)}: {module}.{name}"
        for path in sorted(DATA.rglob("*.py"))
        for module, names in _imports(path)
        if module.startswith("src.")
        for name in names
        if name.startswith("_")
    ]
    assert found == []


def test_src_data_never_imports_src_experiments():
    found = [
        f"{path.relative_to(DATA.parent.parent)}: {module}"
        for path in sorted(DATA.rglob("*.py"))
        for module, _ in _imports(path)
        if module == "src.experiments" or module.startswith("src.experiments.")
    ]
    assert found == []
