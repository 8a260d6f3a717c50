"""A made-up paginated API served over real HTTP, and the provider that reads it.

The demo, the tests and the benchmarks use it as their source: a population of numbered
services behind ``GET /services?page=N&per_page=K``, which can lose and gain members between
cycles, slow down, fail on purpose, or serve entities that break the envelope rules.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlparse

import httpx

from ingestion.entities import entity_ref
from ingestion.errors import EventRejected
from ingestion.provider import (
    DeferredEntity,
    EntityIteratorResult,
    Event,
    EventDelta,
    IncrementalEntityProvider,
)


def service_entity(number: int, version: int = 0, padding: int = 0) -> dict[str, Any]:
    """The entity of service ``number``; ``version`` changes its content, ``padding`` its size."""
    spec: dict[str, Any] = {
        "type": "service",
        "lifecycle": "production" if number % 3 else "experimental",
        "owner": f"team-{number % 17}",
        "version": version,
    }
    if padding:
        spec["description"] = ("lorem ipsum dolor sit amet " * (padding // 27 + 1))[:padding]
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": f"service-{number:07d}",
            "annotations": {"example.com/source": "synthetic"},
        },
        "spec": spec,
    }


@dataclass
class SyntheticSource:
    """The population the server serves. Change it between cycles; reads are thread-safe."""

    count: int = 1000
    per_page: int = 100
    padding: int = 0
    delay: float = 0.0  # seconds each request takes
    removed: set[int] = field(default_factory=set)
    added: int = 0  # members numbered from ``count`` on
    version: int = 0  # bump to change every entity's content
    invalid: set[int] = field(default_factory=set)  # members served with an invalid name
    fail_requests: int = 0  # the next N requests answer 500
    requests: int = 0
    # A page whose request waits until its gate is set: a test can act while a page is read.
    hold: dict[int, threading.Event] = field(default_factory=dict, repr=False)
    asked: list[int] = field(default_factory=list)  # the pages requested, in order
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def members(self) -> list[int]:
        total = self.count + self.added
        return [n for n in range(total) if n not in self.removed]

    def refs(self) -> set[str]:
        """The refs the catalog should hold after a full cycle (valid members only)."""
        return {
            f"component:default/service-{n:07d}" for n in self.members() if n not in self.invalid
        }

    def drop(self, share: float, *, salt: int = 3) -> None:
        """Remove about ``share`` of the current members (deterministically)."""
        step = max(1, round(1 / share)) if share else 0
        with self.lock:
            for n in self.members():
                if step and n % step == salt % step:
                    self.removed.add(n)

    def grow(self, share: float) -> None:
        """Add about ``share`` of the current size as new members."""
        with self.lock:
            self.added += round(len(self.members()) * share)

    def page(self, page: int, per_page: int) -> dict[str, Any]:
        with self.lock:
            self.asked.append(page)
            gate = self.hold.pop(page, None)
        if gate is not None and not gate.wait(timeout=60):
            raise SourceFailure(f"page {page} was held for 60 s")
        with self.lock:
            self.requests += 1
            if self.fail_requests > 0:
                self.fail_requests -= 1
                raise SourceFailure("the synthetic source was told to fail")
            members = self.members()
            version, padding, invalid = self.version, self.padding, set(self.invalid)
        start = (page - 1) * per_page
        chunk = members[start : start + per_page]
        items = []
        for n in chunk:
            entity = service_entity(n, version, padding)
            if n in invalid:
                entity["metadata"]["name"] = f"bad name {n}"
            items.append(entity)
        total_pages = max(1, -(-len(members) // per_page))
        return {"items": items, "page": page, "total_pages": total_pages}


class SourceFailure(RuntimeError):
    pass


class LocalServer:
    """An HTTP server in a background thread, for the ``with`` block that uses it."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SourceServer(LocalServer):
    """Serves a :class:`SyntheticSource` over HTTP (on 127.0.0.1 unless ``host`` says)."""

    def __init__(self, source: SyntheticSource, port: int = 0, host: str = "127.0.0.1") -> None:
        self.source = source
        super().__init__(self._handler(), host, port)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        source = self.source

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/services":
                    self._send(404, {"error": f"no such path {url.path}"})
                    return
                query = parse_qs(url.query)
                try:
                    page = int(query.get("page", ["1"])[0])
                    per_page = int(query.get("per_page", [str(source.per_page)])[0])
                except ValueError:
                    self._send(400, {"error": "page and per_page must be integers"})
                    return
                if source.delay:
                    time.sleep(source.delay)
                try:
                    body = source.page(page, per_page)
                except SourceFailure as exc:
                    self._send(500, {"error": str(exc)})
                    return
                self._send(200, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


#: The topic of the synthetic source's events.
EVENT_TOPIC = "synthetic"


def synthetic_event(
    source_url: str,
    *,
    added: Sequence[int] = (),
    removed: Sequence[int] = (),
    version: int = 0,
    padding: int = 0,
) -> dict[str, Any]:
    """The payload of an event of the synthetic source at ``source_url``: services added or
    changed (served with ``version`` and ``padding``) and services removed, by number."""
    return {
        "source": source_url,
        "added": list(added),
        "removed": list(removed),
        "version": version,
        "padding": padding,
    }


def service_ref(number: int) -> str:
    return _ref(service_entity(number))


def _ref(entity: dict[str, Any]) -> str:
    return entity_ref(
        entity["kind"], entity["metadata"].get("namespace"), entity["metadata"]["name"]
    )


class SyntheticProvider(IncrementalEntityProvider[dict[str, int], httpx.Client]):
    """Reads a synthetic source page by page over HTTP; the cursor is ``{"page": n}``.

    Takes the source's events (topic ``synthetic``, see :func:`synthetic_event`) whose
    ``source`` is its ``base_url``.
    """

    def __init__(self, name: str, base_url: str, per_page: int = 100) -> None:
        self.name = name
        self.base_url = base_url
        self.per_page = per_page

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[httpx.Client], Any]) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            burst(client)

    def next(
        self, context: httpx.Client, cursor: dict[str, int] | None = None
    ) -> EntityIteratorResult[dict[str, int]]:
        page = (cursor or {"page": 1})["page"]
        response = context.get("/services", params={"page": page, "per_page": self.per_page})
        response.raise_for_status()
        data = response.json()
        return EntityIteratorResult(
            done=page >= data["total_pages"],
            entities=[
                DeferredEntity(entity=self.shape(item), location_key=f"synthetic:{self.name}")
                for item in data["items"]
            ],
            cursor={"page": page + 1},
        )

    def shape(self, entity: dict[str, Any]) -> dict[str, Any]:
        """The entity this provider makes of one the source serves (itself here); ``next()``
        and ``on_event`` both go through it, so an event writes what a cycle would."""
        return entity

    def on_event(self, event: Event) -> EventDelta | None:
        payload = event.payload
        if event.topic != EVENT_TOPIC or not isinstance(payload, dict):
            return None
        if payload.get("source") != self.base_url:
            return None
        try:
            added = [int(n) for n in payload.get("added", [])]
            removed = [int(n) for n in payload.get("removed", [])]
            version = int(payload.get("version", 0))
            padding = int(payload.get("padding", 0))
        except (TypeError, ValueError) as exc:
            raise EventRejected(
                f"synthetic event {event.delivery_id!r}: 'added' and 'removed' must be lists of "
                f"service numbers, 'version' and 'padding' numbers ({exc})"
            ) from None
        return EventDelta(
            added=[
                DeferredEntity(
                    entity=self.shape(service_entity(n, version, padding)),
                    location_key=f"synthetic:{self.name}",
                )
                for n in added
            ],
            removed=[_ref(self.shape(service_entity(n))) for n in removed],
        )


def iter_pages(source: SyntheticSource) -> Iterator[list[dict[str, Any]]]:
    """The source's pages, read directly (for checks that do not go through HTTP)."""
    page = 1
    while True:
        body = source.page(page, source.per_page)
        yield body["items"]
        if page >= body["total_pages"]:
            return
        page += 1
