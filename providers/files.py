"""A directory of ``catalog-info.yaml`` files, read in path order, a group of files a page.

Each file may hold several YAML documents, one entity each. A file that does not parse, or a
document that is not a valid entity, becomes an error record naming the file and the line;
the other files still ingest. The cursor is the path of the last file read, so a burst
resumes after it whatever was added or removed meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from ingestion.entities import validate
from ingestion.errors import EntityRejected, ProviderConfigError
from ingestion.provider import (
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    Rejection,
)

__all__ = ["FilesProvider", "catalog_files", "yaml_problem"]

Cursor = dict[str, str]
LOCATION_ANNOTATION = "backstage.io/managed-by-location"
ORIGIN_ANNOTATION = "backstage.io/managed-by-origin-location"


class _CatalogLoader(yaml.SafeLoader):
    """YAML 1.2 reading of scalars as Backstage does: ``2024-01-01`` stays a string."""


_CatalogLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def catalog_files(
    root: Path, pattern: str, after: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Files under ``root`` whose name matches ``pattern``, in path order, after ``after``.

    Paths are tuples of names, compared part by part; directories are listed one at a time
    and those wholly before ``after`` are skipped, so memory holds one branch of the tree.
    Hidden directories and symbolic links to directories are not entered.
    """

    def walk(directory: Path, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        depth = len(prefix)
        bound = after[depth] if after[:depth] == prefix and len(after) > depth else None
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            if bound is not None and entry.name < bound:
                continue
            path = (*prefix, entry.name)
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    yield from walk(Path(entry.path), path)
            elif entry.is_file() and fnmatch(entry.name, pattern) and path > after:
                yield path

    yield from walk(root, ())


class FilesProvider(IncrementalEntityProvider[Cursor, Path]):
    """Reads every file named like ``pattern`` under ``directory``, ``files_per_page`` a page."""

    def __init__(
        self,
        name: str,
        directory: str | Path,
        *,
        pattern: str = "catalog-info.yaml",
        files_per_page: int = 50,
        max_file_bytes: int = 1_000_000,
    ) -> None:
        if files_per_page < 1:
            raise ProviderConfigError(f"provider {name!r}: files_per_page must be at least 1")
        self.name = name
        self.directory = Path(directory)
        self.pattern = pattern
        self.files_per_page = files_per_page
        self.max_file_bytes = max_file_bytes

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[Path], Any]) -> None:
        root = self.directory.expanduser().resolve()
        if not root.is_dir():
            # Failing (not returning nothing) keeps an unmounted volume from sweeping the catalog.
            raise FileNotFoundError(
                f"the catalog directory {root} does not exist or is no directory"
            )
        burst(root)

    def next(self, context: Path, cursor: Cursor | None = None) -> EntityIteratorResult[Cursor]:
        after = tuple(cursor["after"].split("/")) if cursor else ()
        files = catalog_files(context, self.pattern, after)
        page: list[tuple[str, ...]] = []
        for path in files:
            page.append(path)
            if len(page) > self.files_per_page:
                break
        done = len(page) <= self.files_per_page
        page = page[: self.files_per_page]
        entities: list[DeferredEntity] = []
        rejections: list[Rejection] = []
        for path in page:
            found, problems = self.read(context, "/".join(path))
            entities += found
            rejections += problems
        return EntityIteratorResult(
            done=done,
            entities=entities,
            cursor={"after": "/".join(page[-1])} if page else None,
            rejections=rejections,
        )

    def read(self, root: Path, relative: str) -> tuple[list[DeferredEntity], list[Rejection]]:
        """The entities of one file, or why they cannot be had."""
        path = root / relative
        location = f"file:{path}"
        try:
            size = path.stat().st_size
            if size > self.max_file_bytes:
                return [], [
                    Rejection(
                        relative,
                        f"{size} bytes, above the {self.max_file_bytes} byte limit",
                        "size",
                        location,
                    )
                ]
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            return [], [
                Rejection(relative, f"not UTF-8 text (byte {exc.start})", "encoding", location)
            ]
        except OSError as exc:
            return [], [
                Rejection(relative, f"cannot be read: {exc.strerror or exc}", "read", location)
            ]
        try:
            documents = _documents(text)
        except yaml.YAMLError as exc:
            # The file is there but unreadable: what it held stays until it parses again.
            return [], [Rejection(relative, yaml_problem(exc), "yaml", location)]
        entities: list[DeferredEntity] = []
        rejections: list[Rejection] = []
        for number, (line, document) in enumerate(documents, start=1):
            where = f"document {number} (line {line})"
            if not isinstance(document, dict):
                rejections.append(
                    Rejection(
                        relative,
                        f"{where} is a {type(document).__name__}, not an entity",
                        "entity",
                    )
                )
                continue
            try:
                validate(document)
            except EntityRejected as exc:
                rejections.append(Rejection(relative, f"{where}: {exc.message}", exc.rule))
                continue
            entities.append(DeferredEntity(_located(document, location), location))
        return entities, rejections


def _documents(text: str) -> list[tuple[int, Any]]:
    """Every non-empty document of ``text`` with the line it starts on; the first error raises."""
    loader = _CatalogLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            document = loader.construct_document(node)
            if document is not None:
                documents.append((node.start_mark.line + 1, document))
    finally:
        loader.dispose()
    return documents


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what a YAML error is: ``line 3, column 7: YAML error: ...``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"YAML error: {problem}"
    return f"line {mark.line + 1}, column {mark.column + 1}: YAML error: {problem}"


def _located(document: dict[str, Any], location: str) -> dict[str, Any]:
    metadata = dict(document["metadata"])
    annotations = dict(metadata.get("annotations") or {})
    annotations.setdefault(LOCATION_ANNOTATION, location)
    annotations.setdefault(ORIGIN_ANNOTATION, location)
    metadata["annotations"] = annotations
    return {**document, "metadata": metadata}
