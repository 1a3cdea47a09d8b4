"""The shape of the code: dependencies point one way, no import cycles, files a person can hold in their head."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 450


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports, anywhere in it (top level, functions, `if __name__` blocks); relative
    imports resolved against the file's package."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def _src_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Which src module imports which (a package's __init__ counts as the package)."""
    files = {_module_name(f, root): f for f in (root / "src").rglob("*.py")}
    return {
        name: {m for m in _imported_modules(path, root) if m in files and m != name}
        for name, path in files.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    return next((cycle for module in sorted(graph) if module not in state and (cycle := visit(module))), None)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("data", "src.experiments"),
        ("models", "src.experiments"),
        ("models", "src.data"),
        ("utils", "src.data"),
        ("utils", "src.models"),
        ("utils", "src.experiments"),
    ],
)
def test_a_layer_never_imports_the_layers_above_it(layer, forbidden):
    """utils at the bottom; data and models never import orchestration; a network knows its input contract,
    not the dataset code."""
    files = sorted((SRC / layer).rglob("*.py"))
    assert files, f"no modules found under src/{layer}"
    offending = {
        str(f.relative_to(ROOT)): m
        for f in files
        if (m := sorted(x for x in _imported_modules(f) if x == forbidden or x.startswith(forbidden + ".")))
    }
    assert not offending, f"src/{layer} imports {forbidden}: {offending}"


def test_no_import_cycle_between_files_of_src():
    """No file of src/ reaches itself through imports, counting imports placed inside functions."""
    cycle = _cycle(_src_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_hidden_in_functions(tmp_path):
    """The check above can fail: two files importing each other inside functions are found."""
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    for init in (tmp_path / "src" / "__init__.py", package / "__init__.py"):
        init.write_text("")
    (package / "a.py").write_text("def f():\n    from src.pkg import b\n")
    (package / "b.py").write_text("def g():\n    from .a import f\n")
    assert _cycle(_src_graph(tmp_path)) in (["src.pkg.a", "src.pkg.b", "src.pkg.a"],)


def test_no_file_under_src_is_longer_than_450_lines():
    long = {
        str(f.relative_to(ROOT)): n
        for f in SRC.rglob("*.py")
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these along their seams: {long}"


def test_only_the_tracking_module_constructs_an_mlflow_client():
    constructing = sorted(
        str(f.relative_to(ROOT)) for f in SRC.rglob("*.py") if "MlflowClient(" in f.read_text()
    )
    assert constructing == ["src/experiments/tracking/store.py"]


def test_no_override_of_a_private_lightning_or_hydra_method():
    """Subclasses of Lightning and Hydra classes (modules, callbacks, checkpoint IO) override public hooks only:
    private ones change between minor versions."""
    import importlib
    import inspect

    offending = []
    for path in sorted(SRC.rglob("*.py")):
        if "lightning" not in path.read_text() and "hydra" not in path.read_text():
            continue
        module = importlib.import_module(_module_name(path))
        for cls in (
            c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__
        ):
            lightning_bases = [
                b
                for b in cls.__mro__[1:]
                if b.__module__.startswith(("lightning", "pytorch_lightning", "hydra"))
            ]
            offending += [
                f"{cls.__module__}.{cls.__name__}.{name}"
                for name, value in vars(cls).items()
                if inspect.isfunction(value)
                and name.startswith("_")
                and not name.startswith("__")
                and any(name in vars(base) for base in lightning_bases)
            ]
    assert not offending, offending


def _private_uses(path: Path, prefixes: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """`from <module> import _name`, `import <module>._private` and `<module>._name` for the modules whose
    dotted name starts with one of `prefixes` (dunder names are public)."""

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    found, modules = [], set()  # names this file binds to such modules
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefixes):
            if any(private(part) for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(prefixes):
                    if any(private(part) for part in alias.name.split(".")):
                        found.append(f"line {node.lineno}: import {alias.name}")
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and private(node.attr) and isinstance(node.value, ast.Name):
            if node.value.id in modules:
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    """The seams between files are public names: a `_name` is its own module's business."""
    offending = {
        str(f.relative_to(ROOT)): uses
        for f in sorted(SRC.rglob("*.py"))
        if (uses := _private_uses(f, ("src.", "src")))
    }
    assert not offending, offending


def test_the_private_name_check_can_fail(tmp_path):
    (tmp_path / "src").mkdir()
    planted = tmp_path / "src" / "a.py"
    planted.write_text(
        "from src.b import _scan\nfrom src import c\nc._sha256()\nimport hydra._internal.utils\n"
    )
    assert len(_private_uses(planted, ("src.", "src"), tmp_path)) == 2
    assert _private_uses(planted, ("hydra",), tmp_path) == ["line 4: import hydra._internal.utils"]


def test_no_private_hydra_or_lightning_api():
    """Hydra's `_internal` package and Lightning's private names change between releases: only their
    public API is used (callbacks, HydraConfig, the override parser; Lightning's hooks)."""
    offending = {
        str(f.relative_to(ROOT)): uses
        for f in sorted(SRC.rglob("*.py"))
        if (uses := _private_uses(f, ("hydra", "lightning", "pytorch_lightning")))
    }
    offending.update(
        {
            str(f.relative_to(ROOT)): ["._return_value"]
            for f in SRC.rglob("*.py")
            if "._return_value" in f.read_text()  # JobReturn's private field: its public return_value raises
        }
    )
    assert not offending, offending
