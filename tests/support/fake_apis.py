"""Made-up APIs served over real HTTP on 127.0.0.1: a paginated JSON API and a GitHub lookalike.

Both run in a background thread of the test process, record every request, can be told to
answer the next requests with canned failures, and hold their data in plain lists that tests
change between cycles.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

from providers._names import entity_name
from providers.synthetic import LocalServer


@dataclass
class Request:
    """A request as the server saw it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    at: float


@dataclass
class Answer:
    """What the server sends back: a JSON body unless ``raw`` is given."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    delay: float = 0.0
    date: float | None = None  # the server clock's epoch seconds in the Date header, if not now


class FakeServer(LocalServer):
    """A threaded HTTP server answering ``GET`` with ``self.answer(request)``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.canned: list[Answer] = []  # answered, in order, before anything else
        self.at: dict[int, Answer] = {}  # the answer to the n-th request (from 1)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                request = Request(
                    url.path,
                    dict(parse_qsl(url.query, keep_blank_values=True)),
                    {k.lower(): v for k, v in self.headers.items()},
                    time.time(),
                )
                with server.lock:
                    server.requests.append(request)
                    canned = server.at.pop(len(server.requests), None)
                    if canned is None and server.canned:
                        canned = server.canned.pop(0)
                answer = canned or server.answer(request)
                if answer.delay:
                    time.sleep(answer.delay)
                data = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                self.date = answer.date
                try:
                    self.send_response(answer.status)
                    if answer.raw is None:
                        self.send_header("Content-Type", "application/json")
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                date = getattr(self, "date", None)
                return super().date_time_string(date if date is not None else timestamp)

        super().__init__(Handler)

    def answer(self, request: Request) -> Answer:
        return Answer(404, {"message": f"no such path {request.path}"})

    def seen(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def make_item(n: int) -> dict[str, Any]:
    """Item ``n`` of the made-up service API."""
    return {
        "id": n,
        "slug": f"svc-{n:04d}",
        "summary": f"Service number {n}",
        "team": {"name": f"team-{n % 5}"},
        "tier": n % 3,
        "public": n % 2 == 0,
        "tags": ["made-up", f"tier-{n % 3}"],
    }


class ItemsApi(FakeServer):
    """A paginated list of services, one path per pagination style.

    ``/page?page=N&per_page=K`` (``meta.pages``), ``/offset?offset=O&limit=L`` (``total``),
    ``/cursor?cursor=C`` (``next`` in the body, opaque), ``/link?after=C`` (``Link`` header),
    all with the items in ``data.items``. With ``token`` set, a request must carry
    ``Authorization: Bearer <token>`` or ``?api_key=<token>``.
    """

    def __init__(self, count: int = 95, per_page: int = 20, token: str | None = None) -> None:
        super().__init__()
        self.items = [make_item(n) for n in range(count)]
        self.per_page = per_page
        self.token = token

    def ids(self) -> list[int]:
        with self.lock:
            return [item["id"] for item in self.items]

    def remove(self, ids: set[int]) -> None:
        with self.lock:
            self.items = [item for item in self.items if item["id"] not in ids]

    def answer(self, request: Request) -> Answer:
        if self.token is not None:
            bearer = request.headers.get("authorization") == f"Bearer {self.token}"
            if not bearer and request.query.get("api_key") != self.token:
                return Answer(401, {"error": "invalid credentials"})
        with self.lock:
            items = list(self.items)
        q = request.query
        size = int(q.get("per_page", q.get("limit", self.per_page)))
        if request.path == "/page":
            page = int(q.get("page", "1"))
            chunk = items[(page - 1) * size : page * size]
            pages = max(1, -(-len(items) // size))
            return Answer(body={"data": {"items": chunk}, "meta": {"pages": pages}})
        if request.path == "/offset":
            offset = int(q.get("offset", "0"))
            return Answer(
                body={"data": {"items": items[offset : offset + size]}, "total": len(items)}
            )
        if request.path in ("/cursor", "/link"):
            key = "cursor" if request.path == "/cursor" else "after"
            after = int(_decode(q[key])) if key in q else -1
            chunk = [i for i in items if i["id"] > after][:size]
            more = bool(chunk) and chunk[-1]["id"] < items[-1]["id"]
            following = _encode(chunk[-1]["id"]) if more else None
            if request.path == "/cursor":
                return Answer(body={"data": {"items": chunk}, "next": following})
            headers = {}
            if following is not None:
                kept = {k: v for k, v in q.items() if k != "after"}
                link = f"/link?{urlencode({**kept, 'after': following})}"
                headers["Link"] = f'<{link}>; rel="next", </link>; rel="first"'
            return Answer(body={"data": {"items": chunk}}, headers=headers)
        return super().answer(request)


def _encode(n: int) -> str:
    return f"c{n * 7 + 3:x}"  # opaque to the client


def _decode(cursor: str) -> int:
    return (int(cursor[1:], 16) - 3) // 7


def make_repo(n: int, org: str = "acme") -> dict[str, Any]:
    """Repository ``n`` of the made-up organisation, shaped like GitHub's API."""
    name = f"repo-{n:04d}"
    if n % 10 == 3:
        name = f".Odd..Name_{n}--"  # not a valid entity name as it is
    return {
        "id": 1000 + n,
        "name": name,
        "full_name": f"{org}/{name}",
        "description": None if n % 4 == 0 else f"Repository {n}",
        "html_url": f"https://github.example/{org}/{name}",
        "archived": n % 7 == 0,
        "topics": ["backend", f"team-{n % 3}"] if n % 2 else [],
        "visibility": "private",
    }


class GitHubApi(FakeServer):
    """``GET /orgs/{org}/repos`` as GitHub serves it: ``Link`` pagination, rate-limit headers.

    ``remaining`` counts down with each request; at 0 the API answers 403 with
    ``X-RateLimit-Remaining: 0`` until ``reset`` (an epoch second), then refills.
    """

    def __init__(self, org: str = "acme", count: int = 250, token: str = "gh-secret") -> None:
        super().__init__()
        self.org = org
        self.repos = [make_repo(n, org) for n in range(count)]
        self.token = token
        self.limit = 5000
        self.remaining = 5000
        self.reset = int(time.time()) + 3600
        self.window: float | None = None
        self.resets: list[int] = []

    def names(self) -> list[str]:
        with self.lock:
            return [repo["name"] for repo in self.repos]

    def remove(self, names: set[str]) -> None:
        with self.lock:
            self.repos = [repo for repo in self.repos if repo["name"] not in names]

    def limit_for(self, seconds: float, remaining: int = 0) -> None:
        """Allow ``remaining`` more requests; the one that spends the last starts a window of
        ``seconds`` until the reset (at once if ``remaining`` is 0). ``resets`` records each."""
        with self.lock:
            self.remaining = remaining
            self.window = seconds
            if remaining == 0:
                self._start_window(time.time())

    def _start_window(self, now: float) -> None:
        assert self.window is not None
        self.reset = int(now + self.window + 0.999)
        self.resets.append(self.reset)

    def answer(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(401, {"message": "Bad credentials", "status": "401"})
        with self.lock:
            now = time.time()
            if self.remaining <= 0 and now >= self.reset:
                self.remaining, self.reset, self.window = self.limit, int(now) + 3600, None
            rate = {
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Reset": str(self.reset),
                "X-RateLimit-Resource": "core",
            }
            if self.remaining <= 0:
                rate["X-RateLimit-Remaining"] = "0"
                return Answer(403, {"message": "API rate limit exceeded for user."}, rate)
            self.remaining -= 1
            if self.remaining == 0 and self.window is not None:
                self._start_window(now)
            rate["X-RateLimit-Reset"] = str(self.reset)
            rate["X-RateLimit-Remaining"] = str(self.remaining)
            repos = sorted(self.repos, key=lambda r: r["full_name"].lower())
        if request.path != f"/orgs/{self.org}/repos":
            return Answer(404, {"message": "Not Found"}, rate)
        size = min(100, int(request.query.get("per_page", "30")))
        page = int(request.query.get("page", "1"))
        chunk = repos[(page - 1) * size : page * size]
        links = []
        if page * size < len(repos):
            query = {**request.query, "page": str(page + 1)}
            links.append(f'<{self.url}{request.path}?{urlencode(query)}>; rel="next"')
            last = {**request.query, "page": str(-(-len(repos) // size))}
            links.append(f'<{self.url}{request.path}?{urlencode(last)}>; rel="last"')
        headers = dict(rate)
        if links:
            headers["Link"] = ", ".join(links)
        return Answer(body=chunk, headers=headers)


def refs(ids: list[int]) -> set[str]:
    """The refs of the items ``ids`` of an :class:`ItemsApi`."""
    return {f"component:default/svc-{n:04d}" for n in ids}


def expected_refs(api: GitHubApi) -> set[str]:
    """The refs a GitHub provider makes of the repositories of ``api``."""
    return {f"component:default/{entity_name(n)}".lower() for n in api.names()}
