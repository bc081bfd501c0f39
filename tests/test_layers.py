"""The import graph of ``zsad`` follows the layers declared in pyproject.toml
([tool.importlinter]): cli -> api -> engine -> methods/data -> backbone/metrics/maps,
never upward, and no module imports itself back through others."""
from __future__ import annotations

from pathlib import Path

import pytest

use_cases = pytest.importorskip("importlinter.application.use_cases", reason="import-linter is a dev extra: pip install -e .[dev]")
grimp = pytest.importorskip("grimp")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_declared_layers_are_kept():
    from importlinter import configuration

    configuration.configure()
    assert use_cases.lint_imports(config_filename=str(PYPROJECT), cache_dir=None, no_logo=True)


def _import_cycle(graph) -> list[str] | None:
    """A cycle of module-level imports between zsad's modules, or None (iterative DFS)."""
    state: dict[str, int] = {}
    for root in sorted(graph.modules):
        if root in state:
            continue
        stack = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        path = [root]
        state[root] = 1
        while stack:
            module, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[module] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
    return None


def test_no_import_cycles_between_modules():
    # No exemptions: a package's modules never import back from its __init__.
    assert _import_cycle(grimp.build_graph("zsad", cache_dir=None)) is None


def test_cycle_finder_finds_a_planted_cycle():
    graph = grimp.ImportGraph()
    for name in ("pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    assert _import_cycle(graph) is None
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _import_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
