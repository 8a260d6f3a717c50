"""An in-process source for the benchmarks: the source is never the bottleneck.

Entities are made from their number alone (deterministic), are about 1 KB of JSON once the
engine has annotated them, and come in pages of ``page_size``; the cursor is the offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ingestion.provider import DeferredEntity, EntityIteratorResult, IncrementalEntityProvider

PAGE_SIZE = 500
_WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
_DESCRIPTION = (_WORDS * 12)[:700]


def bench_entity(number: int) -> dict[str, Any]:
    """The entity of member ``number``: about 1 KB of canonical JSON with its annotation."""
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": f"service-{number:08d}",
            "annotations": {"example.com/source": "bench"},
            "labels": {"tier": f"t{number % 5}", "team": f"team-{number % 17}"},
        },
        "spec": {
            "type": "service",
            "lifecycle": "production" if number % 3 else "experimental",
            "owner": f"team-{number % 17}",
            "system": f"system-{number % 101}",
            "description": f"{number} {_DESCRIPTION}",
        },
    }


def bench_ref(number: int) -> str:
    return f"component:default/service-{number:08d}"


class BenchProvider(IncrementalEntityProvider[dict[str, int], None]):
    """``count`` generated entities, ``page_size`` a page; the cursor is ``{"offset": n}``.

    ``latency``: seconds each page takes before it is made, like a remote API's round trip;
    ``first``: the number of its first entity, so that providers side by side own apart."""

    def __init__(
        self,
        name: str,
        count: int,
        page_size: int = PAGE_SIZE,
        latency: float = 0.0,
        first: int = 0,
    ) -> None:
        self.name = name
        self.count = count
        self.page_size = page_size
        self.latency = latency
        self.first = first

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[None], Any]) -> None:
        burst(None)

    def next(
        self, context: None, cursor: dict[str, int] | None = None
    ) -> EntityIteratorResult[dict[str, int]]:
        if self.latency:
            time.sleep(self.latency)
        start = (cursor or {"offset": 0})["offset"]
        end = min(start + self.page_size, self.count)
        location = f"bench:{self.name}"
        return EntityIteratorResult(
            done=end >= self.count,
            entities=[
                DeferredEntity(bench_entity(self.first + n), location_key=location)
                for n in range(start, end)
            ],
            cursor={"offset": end},
        )
