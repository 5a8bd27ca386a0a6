"""The package's layers, read from its source: imports point one way, and the math imports no
framework.

``callbacks -> live -> analysis -> spectra``, ``live -> runfile``, ``reporting -> runfile``: every
import between modules of the package is an edge, whether at module level or inside a function
(both run sooner or later), and the graph has no cycle, between modules or between packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spectral_callbacks"
FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "keras", "tensorflow", "jax", "h5py", "tensorboardX")

# package -> the packages of ours it may import (itself always allowed; "" is the top level)
ALLOWED = {
    "spectra": set(),
    "analysis": {"spectra", "capture"},
    "capture": {"spectra", "analysis"},
    "runfile": {"spectra", "analysis"},
    "sinks": {"spectra", "analysis", "reporting"},
    "live": {"spectra", "analysis", "capture", "runfile", "sinks"},
    "callbacks": {"spectra", "analysis", "capture", "runfile", "live"},
    "posthoc": {"spectra", "analysis", "capture", "runfile", "live"},
    "reporting": {"spectra", "analysis", "runfile"},
    "dashboard": {"spectra", "runfile", "reporting"},
}


def modules() -> dict[str, Path]:
    """Dotted module name (without the package prefix) -> its file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Every module this one imports, as dotted names (ours without the package prefix)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    base = here if is_package else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module or ""
                continue
            anchor = base[: len(base) - (node.level - 1)]
            target = ".".join([*anchor, *(node.module.split(".") if node.module else [])])
            prefix = f"spectral_callbacks.{target}" if target else "spectral_callbacks"
            yield prefix
            yield from (f"{prefix}.{alias.name}" for alias in node.names)  # "from . import module"


def graph() -> dict[str, set[str]]:
    """Our module -> the modules of ours it imports."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for imported in imports_of(name, path):
            if imported == "spectral_callbacks" or not imported.startswith("spectral_callbacks."):
                continue
            target = imported.removeprefix("spectral_callbacks.")
            if target in known and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def package_of(module: str) -> str:
    return module.split(".")[0] if "." in module else ""


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_module_import_graph_has_no_cycle() -> None:
    assert find_cycle(graph()) is None


def test_the_package_import_graph_has_no_cycle_and_follows_the_layers() -> None:
    packages: dict[str, set[str]] = {}
    wrong = []
    for module, targets in graph().items():
        source = package_of(module)
        for target in targets:
            destination = package_of(target)
            if destination == source or destination == "":
                continue
            packages.setdefault(source, set()).add(destination)
            if source in ALLOWED and destination not in ALLOWED[source]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []
    assert find_cycle(packages) is None


@pytest.mark.parametrize("module", sorted(m for m in modules() if package_of(m) == "spectra"))
def test_the_spectral_math_imports_no_framework(module: str) -> None:
    imported = {name.split(".")[0] for name in imports_of(module, modules()[module])}
    assert not imported & set(FRAMEWORKS)


def test_the_checks_find_a_cycle_and_a_wrong_layer() -> None:
    """The checker itself: a planted cycle is found, and a clean graph passes."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert "spectra" not in ALLOWED["spectra"] and "live" not in ALLOWED["analysis"]


def test_the_public_api_resolves_and_importing_it_loads_no_numpy() -> None:
    """Every name of ``spectral_callbacks.__all__`` exists; the import alone loads no numpy (the
    command line sets BLAS threads before numpy starts)."""
    import subprocess
    import sys

    code = (
        "import sys, spectral_callbacks as s\n"
        "assert 'numpy' not in sys.modules, 'numpy loaded on import'\n"
        "missing = [n for n in s.__all__ if n != '__version__' and getattr(s, n, None) is None]\n"
        "assert not missing, missing\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_experiments_use_only_the_public_api() -> None:
    experiments = PACKAGE.parent / "experiments"
    private = []
    for path in sorted(experiments.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spectral_callbacks."):
                private.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                private += [
                    f"{path.name}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("spectral_callbacks.")
                ]
    assert private == []
