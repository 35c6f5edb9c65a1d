"""The dependency order of the package, read from the source: every import of a w2v module
points down the stack config <- nn <- convert <- loading <- pipeline <- cli, none hides
inside a function, and only the CLI prints."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

# lowest first; a module may import its own layer and those below it
LAYERS = (
    ("w2v.errors", "w2v.atomic", "w2v.config", "w2v.configs", "w2v.allocator"),
    ("w2v.nn",),
    ("w2v.convert", "w2v.onnx"),
    ("w2v.loading", "w2v.hub", "w2v.longform"),
    ("w2v.pipeline", "w2v.compat"),
    ("w2v.probe", "w2v.train"),
    ("w2v.cli",),
    ("w2v",),  # the package's __init__: the public API, imports anything
)


def _modules() -> dict[str, Path]:
    """Module name → source file, with convert/ installed as w2v.convert."""
    out = {}
    for folder, package in (("w2v", "w2v"), ("convert", "w2v.convert")):
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > depth:
                best, depth = i, len(name)
    assert best is not None, f"{module} is in no layer of LAYERS"
    return best


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported w2v module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}".rstrip(".")
                names = [f"{base}.{a.name}" for a in child.names] if base == "w2v" else [base]
            else:
                visit(child, nested)
                continue
            found.extend((n, child.lineno, in_function) for n in names if n.split(".")[0] == "w2v")

    visit(tree, False)
    return found


MODULES = _modules()


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_and_sit_at_the_top(module):
    path = MODULES[module]
    mine = _layer(module)
    for target, line, in_function in _imports(path, module):
        where = f"{path.relative_to(REPO)}:{line} imports {target}"
        assert not in_function, f"{where} inside a function"
        assert _layer(target) <= mine, f"{where}, which sits above it in the dependency order"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_cli_prints(module):
    if module == "w2v.cli":
        return
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    calls = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
    ]
    assert not calls, f"{MODULES[module].relative_to(REPO)} prints at lines {calls}"
