"""The package's modules form a one-way graph, and the light ones stay light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import flaxdigits

PACKAGE = Path(flaxdigits.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every flaxdigits module -> the flaxdigits modules it imports, wherever the import is."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            targets |= {f for f in found if f in modules and f != name}
        graph[name] = targets - {"flaxdigits"}  # the package itself only holds __version__
    return graph


def test_no_import_cycles():
    graph, done, path = _imports(), set(), []

    def visit(name):
        if name in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name not in done:
            path.append(name)
            for target in sorted(graph[name]):
                visit(target)
            path.pop()
            done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_core_layers_import_only_downwards():
    graph = _imports()
    order = ["flaxdigits.errors", "flaxdigits.config", "flaxdigits.paths",
             "flaxdigits.checkpoint_file", "flaxdigits.models", "flaxdigits.parallel",
             "flaxdigits.inference",
             "flaxdigits.training", "flaxdigits.checkpoints"]
    for i, name in enumerate(order):
        assert graph[name] <= set(order[:i]) | {"flaxdigits.augment", "flaxdigits.data"}, name


@pytest.mark.parametrize("module", ["flaxdigits.cli", "flaxdigits.config",
                                    "flaxdigits.checkpoint_file", "flaxdigits.recipes"])
def test_light_modules_do_not_import_jax(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('jax')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_no_linen_left_in_the_package():
    """The models and training are Flax NNX; Linen appears only as a format-1 file's layout."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith(("flax.linen", "flax.training")) for n in names), path
