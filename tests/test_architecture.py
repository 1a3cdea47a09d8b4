"""Dependencies point one way: data and models never import experiments (orchestration)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (top level, functions, `if __name__` blocks)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ["data", "models"])
def test_data_and_models_never_import_experiments(layer):
    files = sorted((SRC / layer).rglob("*.py"))
    assert files, f"no modules found under src/{layer}"
    offending = {str(f.relative_to(SRC.parent)): sorted(m for m in _imported_modules(f)
                                                        if m == "src.experiments" or m.startswith("src.experiments."))
                 for f in files}
    assert not {f: m for f, m in offending.items() if m}, f"src/{layer} imports orchestration: {offending}"


def test_models_never_import_data():
    """A network and its weights know their input contract, not the dataset code."""
    offending = {str(f.relative_to(SRC.parent)): m for f in sorted((SRC / "models").rglob("*.py"))
                 if (m := sorted(x for x in _imported_modules(f) if x.startswith("src.data")))}
    assert not offending, f"src/models imports the data layer: {offending}"
