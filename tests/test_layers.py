"""The layers: the engine imports nothing from the ready providers, and no module imports
itself back through others (read from the source, as an import linter would)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("ingestion", "providers")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports when it is imported (its top-level imports)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


@pytest.mark.timeout(30)
def test_the_engine_imports_nothing_from_the_ready_providers(graph: dict[str, set[str]]) -> None:
    wrong = {
        (module, imported)
        for module, imports in graph.items()
        if module.startswith("ingestion")
        for imported in imports
        if imported.startswith("providers")
    }
    assert wrong == set()


@pytest.mark.timeout(30)
def test_no_module_imports_itself_back(graph: dict[str, set[str]]) -> None:
    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        return seen

    circles = sorted(module for module in graph if module in reaches(module))
    assert circles == []
