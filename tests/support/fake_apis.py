"""Made-up APIs served over real HTTP on 127.0.0.1: a paginated JSON API and a GitHub lookalike.

Both run in a background thread of the test process, record every request, can be told to
answer the next requests with canned failures, and hold their data in plain lists that tests
change between cycles.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
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
    method: str = "GET"
    body: bytes = b""


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
    """A threaded HTTP server answering ``GET`` and ``POST`` with ``self.answer(request)``.

    ``hooks[n]`` runs just before the n-th request (from 1) is answered, to change the source
    between two requests of one cycle.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.canned: list[Answer] = []  # answered, in order, before anything else
        self.at: dict[int, Answer] = {}  # the answer to the n-th request (from 1)
        self.hooks: dict[int, Callable[[], None]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.do_GET(self.rfile.read(length) if length else b"", "POST")

            def do_GET(self, body: bytes = b"", method: str = "GET") -> None:
                url = urlparse(self.path)
                request = Request(
                    url.path,
                    dict(parse_qsl(url.query, keep_blank_values=True)),
                    {k.lower(): v for k, v in self.headers.items()},
                    time.time(),
                    method,
                    body,
                )
                answer = server.respond(request)
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

    def respond(self, request: Request) -> Answer:
        """Record ``request``, run its hook, and answer it (a canned answer first)."""
        with self.lock:
            self.requests.append(request)
            number = len(self.requests)
            canned = self.at.pop(number, None)
            if canned is None and self.canned:
                canned = self.canned.pop(0)
            hook = self.hooks.pop(number, None)
        if hook is not None:
            hook()
        return canned or self.answer(request)

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
    all with the items in ``data.items``; ``/items/{id}`` is one item (404 once deleted, a
    redirect to its new URL once moved).
    The cursor and link styles are keyset cursors (the last id read). With ``token`` set, a
    request must carry ``Authorization: Bearer <token>`` or ``?api_key=<token>``.
    """

    def __init__(self, count: int = 95, per_page: int = 20, token: str | None = None) -> None:
        super().__init__()
        self.items = [make_item(n) for n in range(count)]
        self.per_page = per_page
        self.token = token
        self.moved: dict[int, tuple[int, int]] = {}  # an old id -> (redirect status, new id)

    def ids(self) -> list[int]:
        with self.lock:
            return [item["id"] for item in self.items]

    def remove(self, ids: set[int]) -> None:
        with self.lock:
            self.items = [item for item in self.items if item["id"] not in ids]

    def insert(self, ids: list[int]) -> None:
        """Add items (kept in id order, so that one can land on a page already read)."""
        with self.lock:
            self.items = sorted([*self.items, *(make_item(n) for n in ids)], key=_by_id)

    def rename(self, n: int, slug: str) -> None:
        """Give item ``n`` another slug (so another entity name)."""
        with self.lock:
            for item in self.items:
                if item["id"] == n:
                    item["slug"] = slug

    def move(self, n: int, to: int, status: int = 301) -> None:
        """Give item ``n`` the id ``to``: ``/items/{n}`` answers ``status`` to ``/items/{to}``."""
        with self.lock:
            for item in self.items:
                if item["id"] == n:
                    item["id"] = to
            self.moved[n] = (status, to)

    def slugs(self) -> list[str]:
        with self.lock:
            return [item["slug"] for item in self.items]

    def answer(self, request: Request) -> Answer:
        if self.token is not None:
            bearer = request.headers.get("authorization") == f"Bearer {self.token}"
            if not bearer and request.query.get("api_key") != self.token:
                return Answer(401, {"error": "invalid credentials"})
        with self.lock:
            items, moves = list(self.items), dict(self.moved)
        q = request.query
        size = int(q.get("per_page", q.get("limit", self.per_page)))
        if request.path.startswith("/items/"):
            wanted = request.path.removeprefix("/items/")
            found = [i for i in items if str(i["id"]) == wanted]
            moved = moves.get(int(wanted)) if wanted.isdigit() else None
            if not found and moved is not None:
                status, to = moved
                return Answer(status, {"message": "Moved"}, {"Location": f"/items/{to}"})
            if not found:
                return Answer(404, {"message": "Not Found"})
            return Answer(body={"item": found[0]})
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
            after = int(_decode(q[key])) if key in q else -(10**9)
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


def _by_id(item: dict[str, Any]) -> int:
    return int(item["id"])


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
        "created_at": f"2020-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
    }


class GitHubApi(FakeServer):
    """The parts of GitHub's API the provider uses, with GitHub's real header forms.

    - ``POST /graphql``: ``organization(login:) { repositories(first:, after:, orderBy:
      {field: CREATED_AT, direction: ASC}) }`` with opaque connection cursors that hold the
      position of the last repository (so they do not shift when others are deleted);
      ``NOT_FOUND`` for an unknown organisation; ``RATE_LIMITED`` once the limit is spent.
    - ``GET /orgs/{org}/repos`` and ``GET /organizations/{id}/repos``: page numbers, with
      ``Link`` URLs of the form ``/organizations/{id}/repos?page=N`` as github.com sends them.
    - ``GET /repos/{owner}/{repo}``: the repository; a 301 to ``/repositories/{id}`` with
      GitHub's body when it was renamed or transferred; 404 when deleted.
    - ``GET /repositories/{id}``.

    Every answer carries ``X-GitHub-Request-Id`` and ``X-RateLimit-Limit``, ``-Remaining``,
    ``-Reset``, ``-Used`` and ``-Resource``; REST answers carry a weak ``ETag`` and a matching
    ``If-None-Match`` gets a 304 that spends no rate limit, as on github.com.

    ``remaining`` counts down with each request; at 0 REST answers 403 and GraphQL answers
    ``RATE_LIMITED`` until ``reset`` (an epoch second), then refills. ``hooks[n]`` runs just
    before the n-th request (from 1) is answered: tests delete, insert, rename or transfer
    repositories there, in the middle of a cycle.
    """

    def __init__(
        self, org: str = "acme", count: int = 250, token: str = "gh-secret", org_id: int = 9919
    ) -> None:
        super().__init__()
        self.org = org
        self.org_id = org_id
        self.repos = [make_repo(n, org) for n in range(count)]
        self.next_number = count
        self.moved: dict[str, int] = {}  # an old full name (lower case) -> the repository id
        self.token = token
        self.limit = 5000
        self.remaining = 5000
        self.reset = int(time.time()) + 3600
        self.window: float | None = None
        self.resets: list[int] = []
        self.request_ids: list[str] = []

    # -- the organisation, changed by tests ----------------------------------------------

    def _ours(self, repo: dict[str, Any]) -> bool:
        return bool(repo["full_name"].split("/")[0].lower() == self.org.lower())

    def names(self) -> list[str]:
        with self.lock:
            return [repo["name"] for repo in self.repos if self._ours(repo)]

    def remove(self, names: set[str]) -> None:
        """Delete these repositories of the organisation."""
        with self.lock:
            self.repos = [r for r in self.repos if not (self._ours(r) and r["name"] in names)]

    def insert(self, count: int = 1, *, created_early: bool = False) -> list[str]:
        """Create ``count`` repositories (or transfer them in: ``created_early`` dates them
        before every other one); their names."""
        with self.lock:
            made = []
            for _ in range(count):
                repo = make_repo(self.next_number, self.org)
                self.next_number += 1
                if created_early:
                    repo["created_at"] = f"2001-01-01T00:00:{len(made):02d}Z"
                self.repos.append(repo)
                made.append(repo["name"])
            return made

    def rename(self, old: str, new: str) -> None:
        """Rename a repository: its old name answers 301, as on GitHub."""
        with self.lock:
            repo = self._find(f"{self.org}/{old}")
            assert repo is not None, old
            self.moved[repo["full_name"].lower()] = repo["id"]
            owner = repo["full_name"].split("/")[0]
            repo.update(
                name=new,
                full_name=f"{owner}/{new}",
                html_url=f"https://github.example/{owner}/{new}",
            )

    def transfer(self, name: str, to: str) -> None:
        """Move a repository to another owner: its old name answers 301."""
        with self.lock:
            repo = self._find(f"{self.org}/{name}")
            assert repo is not None, name
            self.moved[repo["full_name"].lower()] = repo["id"]
            repo.update(full_name=f"{to}/{name}", html_url=f"https://github.example/{to}/{name}")

    def _find(self, full_name: str) -> dict[str, Any] | None:
        for repo in self.repos:
            if repo["full_name"].lower() == full_name.lower():
                return repo
        return None

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

    # -- answers --------------------------------------------------------------------------

    def respond(self, request: Request) -> Answer:
        answer = super().respond(request)
        bits = secrets.randbits
        request_id = (
            f"{bits(16):04X}:{bits(16):04X}:{bits(24):06X}:{bits(24):06X}:{int(time.time()):08X}"
        )
        answer.headers.setdefault("X-GitHub-Request-Id", request_id)
        with self.lock:
            self.request_ids.append(answer.headers["X-GitHub-Request-Id"])
        return answer

    def answer(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
        graphql = request.method == "POST" and request.path == "/graphql"
        with self.lock:
            answer = self._graphql(request) if graphql else self._rest(request)
            now = time.time()
            if self.remaining <= 0 and now >= self.reset:
                self.remaining, self.reset, self.window = self.limit, int(now) + 3600, None
            rate = {
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset),
                "X-RateLimit-Used": str(self.limit - self.remaining),
                "X-RateLimit-Resource": "graphql" if graphql else "core",
            }
            if answer.status == 304:
                return Answer(304, raw=b"", headers={**answer.headers, **rate})
            if self.remaining <= 0:
                if graphql:
                    limited = {
                        "errors": [
                            {
                                "type": "RATE_LIMITED",
                                "message": "API rate limit exceeded for user ID 1.",
                            }
                        ]
                    }
                    return Answer(200, limited, rate)
                message = {
                    "message": "API rate limit exceeded for user ID 1.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits",
                }
                return Answer(403, message, rate)
            self.remaining -= 1
            if self.remaining == 0 and self.window is not None:
                self._start_window(now)
            rate.update(
                {
                    "X-RateLimit-Remaining": str(self.remaining),
                    "X-RateLimit-Reset": str(self.reset),
                    "X-RateLimit-Used": str(self.limit - self.remaining),
                }
            )
        answer.headers = {**rate, **answer.headers}
        return answer

    def _graphql(self, request: Request) -> Answer:
        body = json.loads(request.body or b"{}")
        query, variables = body.get("query", ""), body.get("variables") or {}
        if "organization(" not in query or "repositories(" not in query:
            return Answer(200, {"errors": [{"message": "the fake answers one query only"}]})
        login = variables.get("login")
        if str(login).lower() != self.org.lower():
            return Answer(
                200,
                {
                    "data": {"organization": None},
                    "errors": [
                        {
                            "type": "NOT_FOUND",
                            "path": ["organization"],
                            "locations": [{"line": 2, "column": 3}],
                            "message": (
                                f"Could not resolve to an Organization with the login of '{login}'."
                            ),
                        }
                    ],
                },
            )
        first = int(variables.get("first", 100))
        if not 1 <= first <= 100:
            return Answer(200, {"errors": [{"message": "first must be 1 to 100"}]})
        repos = sorted((r for r in self.repos if self._ours(r)), key=_created_order)
        after = variables.get("after")
        if after:
            position = _graph_position(after)
            repos = [r for r in repos if _created_order(r) > position]
        chunk = repos[:first]
        nodes = [
            {
                "databaseId": r["id"],
                "name": r["name"],
                "nameWithOwner": r["full_name"],
                "description": r["description"],
                "url": r["html_url"],
                "isArchived": r["archived"],
                "repositoryTopics": {"nodes": [{"topic": {"name": t}} for t in r["topics"]]},
            }
            for r in chunk
        ]
        end = _graph_cursor(chunk[-1]) if chunk else None
        connection = {
            "pageInfo": {"endCursor": end, "hasNextPage": len(repos) > first},
            "nodes": nodes,
        }
        return Answer(200, {"data": {"organization": {"repositories": connection}}})

    def _rest(self, request: Request) -> Answer:
        not_found = Answer(
            404,
            {
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest",
                "status": "404",
            },
        )
        parts = request.path.strip("/").split("/")
        if request.method != "GET":
            return not_found
        if parts in (["orgs", self.org, "repos"], ["organizations", str(self.org_id), "repos"]):
            return self._conditional(request, self._list(request))
        if len(parts) == 3 and parts[0] == "repos":
            full_name = f"{parts[1]}/{parts[2]}"
            repo = self._find(full_name)
            if repo is not None:
                return self._conditional(request, Answer(body=_public(repo)))
            moved = self.moved.get(full_name.lower())
            if moved is not None and any(r["id"] == moved for r in self.repos):
                where = f"{self.url}/repositories/{moved}"
                body = {
                    "message": "Moved Permanently",
                    "url": where,
                    "documentation_url": "https://docs.github.com/rest/guides/"
                    "best-practices-for-using-the-rest-api#follow-redirects",
                }
                return Answer(301, body, {"Location": where})
            return not_found
        if len(parts) == 2 and parts[0] == "repositories" and parts[1].isdigit():
            for repo in self.repos:
                if repo["id"] == int(parts[1]):
                    return self._conditional(request, Answer(body=_public(repo)))
        return not_found

    def _list(self, request: Request) -> Answer:
        ours = [r for r in self.repos if self._ours(r)]
        if request.query.get("sort") == "full_name":
            repos = sorted(ours, key=lambda r: r["full_name"].lower())
        else:
            repos = sorted(ours, key=_created_order)
        size = min(100, int(request.query.get("per_page", "30")))
        page = int(request.query.get("page", "1"))
        chunk = repos[(page - 1) * size : page * size]
        pages = max(1, -(-len(repos) // size))
        base = f"{self.url}/organizations/{self.org_id}/repos"
        kept = {k: v for k, v in request.query.items() if k != "page"}
        links = []
        for rel, number, show in (
            ("prev", page - 1, page > 1),
            ("next", page + 1, page < pages),
            ("last", pages, page < pages),
            ("first", 1, page > 1),
        ):
            if show:
                links.append(f'<{base}?{urlencode({**kept, "page": number})}>; rel="{rel}"')
        headers = {"Link": ", ".join(links)} if links else {}
        return Answer(body=[_public(r) for r in chunk], headers=headers)

    @staticmethod
    def _conditional(request: Request, answer: Answer) -> Answer:
        digest = hashlib.sha256(json.dumps(answer.body, sort_keys=True).encode()).hexdigest()
        etag = f'W/"{digest[:32]}"'
        answer.headers["ETag"] = etag
        answer.headers.setdefault("Cache-Control", "private, max-age=60, s-maxage=60")
        answer.headers.setdefault("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
        wanted = request.headers.get("if-none-match", "")
        if etag in [tag.strip() for tag in wanted.split(",")]:
            return Answer(304, raw=b"", headers={"ETag": etag})
        return answer


def _created_order(repo: dict[str, Any]) -> tuple[str, int]:
    return (str(repo["created_at"]), int(repo["id"]))


def _graph_cursor(repo: dict[str, Any]) -> str:
    created, number = _created_order(repo)
    return base64.b64encode(f"cursor:v2:{created}|{number}".encode()).decode()


def _graph_position(cursor: str) -> tuple[str, int]:
    created, number = base64.b64decode(cursor).decode().removeprefix("cursor:v2:").split("|")
    return (created, int(number))


def _public(repo: dict[str, Any]) -> dict[str, Any]:
    """The repository as the REST API shows it."""
    owner = repo["full_name"].split("/")[0]
    return {**repo, "owner": {"login": owner, "type": "Organization"}}


def refs(ids: list[int]) -> set[str]:
    """The refs of the items ``ids`` of an :class:`ItemsApi`."""
    return {f"component:default/svc-{n:04d}" for n in ids}


def expected_refs(api: GitHubApi) -> set[str]:
    """The refs a GitHub provider makes of the repositories of ``api``."""
    return {f"component:default/{entity_name(n)}".lower() for n in api.names()}
