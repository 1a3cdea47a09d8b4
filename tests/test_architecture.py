"""Dependencies point one way: data and models never import experiments (orchestration), models never data."""

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


@pytest.mark.parametrize(("layer", "forbidden"), [("data", "src.experiments"), ("models", "src.experiments"),
                                                 ("models", "src.data")])
def test_a_layer_never_imports_the_layers_above_it(layer, forbidden):
    """data and models never import orchestration; a network knows its input contract, not the dataset code."""
    files = sorted((SRC / layer).rglob("*.py"))
    assert files, f"no modules found under src/{layer}"
    offending = {str(f.relative_to(SRC.parent)): m for f in files
                 if (m := sorted(x for x in _imported_modules(f) if x == forbidden or x.startswith(forbidden + ".")))}
    assert not offending, f"src/{layer} imports {forbidden}: {offending}"
