"""Sources held in memory that change while a cycle reads them, and providers that read them.

:class:`ShiftingSource` is a list of names; a hook runs before each page is served, so a test
can delete, insert or rename items in the middle of a cycle, exactly where a page-number
paging skips or repeats items.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ingestion import (
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    RemovalCandidate,
    RemovalCheck,
)
from providers.synthetic import SyntheticSource
from tests.support.waiting import wait_until


def component(name: str, version: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "service", "owner": "team-a", "version": version},
    }


def ref(name: str) -> str:
    return f"component:default/{name}".lower()


@dataclass
class ShiftingSource:
    """Items in order; ``before_page(n)`` hooks run before page ``n`` (from 1) is served."""

    names: list[str]
    before_page: dict[int, Callable[[ShiftingSource], None]] = field(default_factory=dict)
    fail_share: float = 0.0  # the share of next() calls that raise
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    calls: int = 0
    failures: int = 0
    checked: list[str] = field(default_factory=list)  # refs asked about by check_removals

    def refs(self) -> set[str]:
        return {ref(n) for n in self.names}

    def page(self, number: int, size: int) -> list[str]:
        hook = self.before_page.pop(number, None)
        if hook is not None:
            hook(self)
        start = (number - 1) * size
        return self.names[start : start + size]


class PageNumberProvider(IncrementalEntityProvider[dict[str, int], ShiftingSource]):
    """Pages by page number, as many APIs do: an item deleted mid-cycle moves the later ones
    up a page, so one of them is never returned. ``checks``: it implements removal checks."""

    def __init__(self, name: str, source: ShiftingSource, size: int = 5) -> None:
        self.name = name
        self.source = source
        self.size = size

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[ShiftingSource], Any]) -> None:
        burst(self.source)

    def next(
        self, context: ShiftingSource, cursor: dict[str, int] | None = None
    ) -> EntityIteratorResult[dict[str, int]]:
        number = (cursor or {"page": 1})["page"]
        context.calls += 1
        if context.fail_share and context.rng.random() < context.fail_share:
            context.failures += 1
            raise ConnectionError(f"the source failed at page {number}")
        names = context.page(number, self.size)
        return EntityIteratorResult(
            done=len(names) < self.size,
            entities=[DeferredEntity(component(n)) for n in names],
            cursor={"page": number + 1},
        )


class CheckingProvider(PageNumberProvider):
    """A page-number provider that asks its source about each removal candidate."""

    def check_removals(
        self, context: ShiftingSource, candidates: Sequence[RemovalCandidate]
    ) -> RemovalCheck:
        present = {ref(n): n for n in context.names}
        context.checked.extend(c.ref for c in candidates)
        return RemovalCheck(
            gone=[c.ref for c in candidates if c.ref not in present],
            present=[
                DeferredEntity(component(present[c.ref])) for c in candidates if c.ref in present
            ],
        )


def names(count: int, prefix: str = "svc") -> list[str]:
    return [f"{prefix}-{n:03d}" for n in range(count)]


@contextmanager
def page_held(source: SyntheticSource, number: int, begin: Callable[[], Any]) -> Iterator[None]:
    """Call ``begin`` (which starts a cycle) and hold the request of page ``number`` until the
    block ends: inside it, the cycle is reading that page."""
    gate = threading.Event()
    source.hold[number] = gate
    asked = len(source.asked)
    begin()
    try:
        wait_until(
            lambda: number in source.asked[asked:], timeout=30, what=f"page {number} requested"
        )
        yield
    finally:
        gate.set()
