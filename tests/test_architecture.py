"""The import structure of the metasp package: no cycles, leaves that stay leaves, no private
name used across modules except from the leaves, and the test oracle kept apart.

The graph is read from the source with :mod:`ast`: every ``import`` statement counts, at module
level and inside functions (a function-level import hides a cycle, it does not remove it).
Importing a submodule is an edge to that submodule only, not to the packages above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import metasp

PACKAGE = "metasp"
ROOT = Path(metasp.__file__).parent
# Modules that import nothing from metasp: helpers every other module may use, privately too.
LEAVES = ("metasp._arrays", "metasp._version")


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


SOURCES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}
MODULES = set(SOURCES) | {f"{PACKAGE}._core"}  # the compiled extension: a leaf by nature


def _imports(name: str):
    """``(target module, imported name or None, line)`` for every import in module ``name``;
    ``imported name`` is the name taken from ``target`` by ``from target import name``."""
    path = SOURCES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    yield submodule, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _graph() -> dict:
    return {name: {target for target, _, _ in _imports(name) if target in MODULES}
            for name in SOURCES}


def _cycles(graph: dict) -> list:
    """The strongly connected components with more than one module, or with a self-import
    (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(sorted(component))
    return components


def test_the_graph_sees_every_kind_of_import():
    """The reader finds module-level, function-level and package-relative imports (so that
    the checks below can fail)."""
    graph = _graph()
    assert "metasp._solver" in graph["metasp"]  # from ._solver import fit, polish
    assert "metasp.baselines" in graph["metasp"]  # from . import baselines
    assert "metasp._core" in graph["metasp._solver"]  # from . import _core
    assert "metasp.estimator" in graph["metasp"]  # inside __getattr__
    assert "metasp._result" in graph["metasp.baselines._common"]  # from .._result import ...
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}, "b": set()}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles among metasp modules: {cycles}"


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_from_metasp(leaf):
    imported = sorted({f"{target} (line {line})" for target, _, line in _imports(leaf)})
    assert not imported, f"{leaf} is a leaf module but imports {imported}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_names_used(name: str) -> list:
    """Private names (``_x``) module ``name`` takes from another metasp module that is not a
    leaf: ``from module import _x``, and ``module._x`` on a module it imported by name."""
    used, bound = [], {}
    for target, imported, line in _imports(name):
        if imported is None:
            bound[target.rpartition(".")[2]] = target
        elif _private(imported) and target not in LEAVES and target != name:
            used.append(f"{target}.{imported} (line {line})")
    tree = ast.parse(SOURCES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and _private(node.attr)
                and bound[node.value.id] not in LEAVES
                and bound[node.value.id] != f"{PACKAGE}._core"):
            used.append(f"{bound[node.value.id]}.{node.attr} (line {node.lineno})")
    return sorted(used)


# The solver passes the tasks to the compiled core through kernels' private conversion.
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_private_names_stay_in_their_module(name):
    """A name another module needs is public in its module (the modules themselves are
    private); only the leaf helper modules lend out private names."""
    used = _private_names_used(name)
    assert not used, f"{name} uses private names of other modules: {used}"


def test_reference_does_not_import_the_solver():
    """The test oracle shares the validation and the post-processing with the solver, never
    the solver itself."""
    assert "metasp._solver" not in _graph()["metasp.reference"]


def test_baselines_do_not_import_the_test_oracle():
    """metasp.reference is what the compiled code is tested against; the baselines are
    methods in their own right and must not depend on it."""
    importers = sorted(name for name, targets in _graph().items()
                       if name.startswith("metasp.baselines") and "metasp.reference" in targets)
    assert not importers, f"{importers} import metasp.reference"
