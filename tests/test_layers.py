"""The layers: the engine imports nothing from the ready providers, no module imports itself
back through others, the store tests which database it runs on only where it chooses an
implementation, every error of the engine is under one root, and test modules share helpers
through tests/support only (read from the source, as an import linter would)."""

from __future__ import annotations

import ast
import builtins
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


def _database_tests(path: Path) -> set[str]:
    """The functions of ``path`` that compare something with a database's name."""
    names = {"postgresql", "sqlite"}
    found: set[str] = set()
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Constant) and side.value in names
                for side in (node.left, *node.comparators)
            ):
                found.add(function.name)
    return found


@pytest.mark.timeout(30)
def test_the_store_asks_which_database_it_runs_on_only_where_it_chooses_an_implementation() -> None:
    store = ROOT / "ingestion" / "store"
    asked = {
        f"{path.stem}.{function}"
        for path in store.glob("*.py")
        if path.stem not in {"models", "migrate"}  # column types and the schema's lock
        for function in _database_tests(path)
    }
    assert asked == {
        "database.create_sql_engine",
        "dialects.dialect_sql_for",
        "changes.feed_writer_for",
        "pages.entity_writer_for",
    }


@pytest.mark.timeout(30)
def test_every_error_of_the_engine_is_under_the_one_root() -> None:
    built_in = {name for name in dir(builtins) if name.endswith(("Error", "Exception"))}
    outside = {
        f"{path.relative_to(ROOT)}:{node.name}"
        for path in (ROOT / "ingestion").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(isinstance(base, ast.Name) and base.id in built_in for base in node.bases)
    }
    # The root itself, and the CLI's own message for a failed command (it never leaves the CLI).
    assert outside == {"ingestion/errors.py:IngestionError", "ingestion/cli/base.py:Failure"}


@pytest.mark.timeout(30)
def test_test_modules_share_helpers_through_the_support_package_only() -> None:
    tests = ROOT / "tests"
    wrong = set()
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            else:
                continue
            wrong.update(
                (path.relative_to(ROOT).as_posix(), name)
                for name in imported
                if name.startswith(("tests.test_", "tests.conftest"))
            )
    assert wrong == set()
