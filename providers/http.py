"""A provider for paginated HTTP/JSON APIs, configured rather than programmed.

Four pagination styles: page numbers (:class:`PageNumber`), offset and limit
(:class:`OffsetLimit`), an opaque cursor in the body (:class:`NextCursor`) and the RFC 8288
``Link: <...>; rel="next"`` header (:class:`LinkHeader`). Each item found at ``items`` becomes
an entity through an :class:`EntityTemplate`. A token is read from the environment when a burst
begins; it never reaches a cursor, a log line or an error message.

Page numbers and offsets can skip an item when the source changes while a cycle reads it: an
item deleted from a page already read moves every later item up one place, and the first item
of the next page is never returned. With ``item_url`` (``https://api.example.com/items/{id}``)
the provider asks the source about each entity the sweep is about to remove
(:meth:`HttpProvider.check_removals`: a 404 is gone, a redirect on the same origin leads to
the item as it is now); without it, those two styles ask the engine to remove an entity only
after two cycles in a row missed it (:meth:`HttpProvider.default_options`). A cursor or a
``Link`` is as safe as the server's cursor: a keyset cursor cannot skip; a ``Link`` that
carries a page number can.

With ``events`` (:class:`EventRule`), events the source sends between cycles (webhooks,
messages) become deltas (:meth:`HttpProvider.on_event`): the items an event carries become
entities through the same template, and the items it says are gone are removed under the refs
the template gives them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import ConfigDict

from ingestion.entities import entity_ref, valid_api_version, valid_kind, valid_namespace
from ingestion.errors import EventRejected, ProviderConfigError, RetryAfter
from ingestion.provider import (
    DeferredEntity,
    EntityIteratorResult,
    Event,
    EventDelta,
    IncrementalEntityProvider,
    Rejection,
    RemovalCandidate,
    RemovalCheck,
)
from providers._http import (
    Fetched,
    Secrets,
    SourceError,
    SourceUnavailable,
    TokenRefused,
    Verdict,
    check,
    check_each,
    describe,
    get_following,
    json_body,
    mask_in_logs,
    on_origin,
    read_token,
    retry_after_seconds,
    send,
)
from providers._names import entity_name

__all__ = [
    "CheckedHttpProvider",
    "EntityTemplate",
    "EventRule",
    "HttpProvider",
    "LinkHeader",
    "NextCursor",
    "OffsetLimit",
    "PageNumber",
    "Pagination",
    "SourceError",
    "SourceUnavailable",
    "TokenAuth",
    "TokenRefused",
]

log = logging.getLogger("providers.http")

Cursor = dict[str, Any]
_FORBID = ConfigDict(extra="forbid")  # configuration files: an unknown key is an error
_MISSING: Any = object()


# -- pagination ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PageNumber:
    """``?page=1``, ``?page=2``... until an empty page, or until ``total_pages`` says so."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID
    style: Literal["page"] = "page"
    param: str = "page"
    start: int = 1
    size_param: str | None = None  # a page size parameter to send, such as per_page
    size: int | None = None
    total_pages: str | None = None  # where the body says how many pages there are

    def query(self, cursor: Cursor | None) -> dict[str, Any]:
        page = cursor["page"] if cursor else self.start
        query: dict[str, Any] = {self.param: page}
        if self.size_param and self.size:
            query[self.size_param] = self.size
        return query

    def after(self, cursor: Cursor | None, body: Any, count: int) -> Cursor | None:
        page = cursor["page"] if cursor else self.start
        if self.total_pages is not None:
            total = _number(body, self.total_pages, "total_pages")
            return {"page": page + 1} if page - self.start + 1 < total else None
        return {"page": page + 1} if count else None


@dataclass(frozen=True)
class OffsetLimit:
    """``?offset=0&limit=100``, moving by the items received, until an empty page or ``total``."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID
    style: Literal["offset"] = "offset"
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = 100
    total: str | None = None  # where the body says how many items there are

    def query(self, cursor: Cursor | None) -> dict[str, Any]:
        return {self.offset_param: cursor["offset"] if cursor else 0, self.limit_param: self.limit}

    def after(self, cursor: Cursor | None, body: Any, count: int) -> Cursor | None:
        offset = (cursor["offset"] if cursor else 0) + count
        if self.total is not None:
            return (
                {"offset": offset}
                if count and offset < _number(body, self.total, "total")
                else None
            )
        return {"offset": offset} if count else None


@dataclass(frozen=True)
class NextCursor:
    """The body gives the next page's cursor at ``path``; it is sent back as ``param``."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID
    style: Literal["cursor"] = "cursor"
    path: str = "next_cursor"
    param: str = "cursor"

    def query(self, cursor: Cursor | None) -> dict[str, Any]:
        return {self.param: cursor["cursor"]} if cursor else {}

    def after(self, cursor: Cursor | None, body: Any, count: int) -> Cursor | None:
        value = lookup(body, self.path)
        if value is _MISSING or value is None or value == "":
            return None
        if not isinstance(value, str | int):
            raise SourceError(
                f"the next cursor at {self.path!r} must be a string or a number, "
                f"got {type(value).__name__}"
            )
        return {"cursor": value}


@dataclass(frozen=True)
class LinkHeader:
    """Follow the ``Link: <url>; rel="next"`` header (RFC 8288) until there is none."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID
    style: Literal["link"] = "link"


Pagination = PageNumber | OffsetLimit | NextCursor | LinkHeader


def _number(body: Any, path: str, option: str) -> int:
    value = lookup(body, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        found = "nothing" if value is _MISSING else type(value).__name__
        raise SourceError(f"{option}: expected a number at {path!r} in the body, found {found}")
    return int(value)


# -- items and entities -------------------------------------------------------------------


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``"data.items"``, ``"owner.login"``, ``"tags.0"``).

    An empty path is ``data`` itself; a path that leads nowhere gives a private sentinel that
    callers compare with ``_MISSING``.
    """
    if not path:
        return data
    for key in path.split("."):
        if isinstance(data, Mapping):
            data = data.get(key, _MISSING)
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return _MISSING
        if data is _MISSING:
            return _MISSING
    return data


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True)
class _Text:
    """A template string: literal parts and item paths, in order."""

    parts: tuple[tuple[bool, str], ...]  # (is_path, text)

    def render(self, item: Any) -> Any:
        if len(self.parts) == 1 and self.parts[0][0]:
            value = lookup(item, self.parts[0][1])  # a lone placeholder keeps the value's type
            return None if value is _MISSING else value
        out = []
        for is_path, text in self.parts:
            if not is_path:
                out.append(text)
                continue
            value = lookup(item, text)
            if value is _MISSING or value is None:
                return None
            out.append(_scalar_text(value))
        return "".join(out)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class EntityTemplate:
    """How an item becomes an entity: an entity with ``{path}`` placeholders.

    A string that is a single placeholder takes the item's value as it is (a list of topics
    stays a list); placeholders inside longer text are formatted; ``{{`` and ``}}`` are
    literal braces. A key whose value the item lacks is left out. ``apiVersion``, ``kind`` and
    ``metadata.namespace`` take the given defaults when the template does not set them.
    Annotation and label values are turned into strings.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        api_version: str = "backstage.io/v1alpha1",
        kind: str = "Component",
        namespace: str | None = None,
        make_names_valid: bool = False,
    ) -> None:
        metadata = template.get("metadata")
        if not isinstance(metadata, Mapping) or "name" not in metadata:
            raise ProviderConfigError(
                'entity: the template must set metadata.name, for example to "{name}"'
            )
        if not valid_api_version(api_version):
            raise ProviderConfigError(
                f"entity: api_version {api_version!r} must be an optional DNS subdomain and "
                "'/', then letters and digits"
            )
        if not valid_kind(kind):
            raise ProviderConfigError(f"entity: kind {kind!r} must be letters and digits")
        if namespace is not None and not valid_namespace(namespace):
            raise ProviderConfigError(
                f"entity: namespace {namespace!r} must be a DNS label "
                "(lower case letters, digits and '-')"
            )
        self.template = _compile(template, "entity")
        self.api_version = api_version
        self.kind = kind
        self.namespace = namespace
        self.make_names_valid = make_names_valid

    def render(self, item: Any) -> dict[str, Any]:
        """The entity of ``item``."""
        entity = _render(self.template, item)
        assert isinstance(entity, dict)
        entity.setdefault("apiVersion", self.api_version)
        entity.setdefault("kind", self.kind)
        metadata = entity.setdefault("metadata", {})
        if isinstance(metadata, dict):
            if self.namespace is not None:
                metadata.setdefault("namespace", self.namespace)
            for key in ("annotations", "labels"):
                values = metadata.get(key)
                if isinstance(values, dict):
                    metadata[key] = {
                        k: _scalar_text(v) if isinstance(v, str | int | float | bool) else v
                        for k, v in values.items()
                    }
            name = metadata.get("name")
            if self.make_names_valid and isinstance(name, str) and name:
                metadata["name"] = entity_name(name)
        return entity

    def name_paths(self) -> list[str]:
        """The item paths ``metadata.name`` is made of."""
        return _paths(self.template["metadata"].get("name"))

    def identity_paths(self) -> list[str]:
        """The item paths an entity's ref is made of: those of ``kind``,
        ``metadata.namespace`` and ``metadata.name``."""
        metadata = self.template["metadata"]
        paths = [
            *_paths(self.template.get("kind")),
            *_paths(metadata.get("namespace")),
            *_paths(metadata.get("name")),
        ]
        return list(dict.fromkeys(paths))


def _compile(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _compile(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_compile(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and ("{" in value or "}" in value):
        parts: list[tuple[bool, str]] = []
        position = 0
        for match in _PLACEHOLDER.finditer(value):
            if match.start() > position:
                parts.append((False, value[position : match.start()]))
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append((False, token[0]))
            elif match.group(1) is None or not match.group(1).strip():
                raise ProviderConfigError(
                    f"{where}: {value!r} has an unmatched or empty brace; write {{path}} for "
                    "an item's value and {{{{ or }}}} for a literal brace"
                )
            else:
                parts.append((True, match.group(1).strip()))
            position = match.end()
        if position < len(value):
            parts.append((False, value[position:]))
        if all(not is_path for is_path, _ in parts):
            return "".join(text for _, text in parts)
        return _Text(tuple(parts))
    return value


def _paths(compiled: Any) -> list[str]:
    """The item paths of one compiled template value."""
    if isinstance(compiled, _Text):
        return [text for is_path, text in compiled.parts if is_path]
    return []


def _render(value: Any, item: Any) -> Any:
    if isinstance(value, dict):
        rendered = {k: _render(v, item) for k, v in value.items()}
        return {k: v for k, v in rendered.items() if v is not None}
    if isinstance(value, list):
        return [v for v in (_render(v, item) for v in value) if v is not None]
    if isinstance(value, _Text):
        return value.render(item)
    return value


# -- authentication -----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAuth:
    """A token read from the environment variable ``token_env`` when a burst begins.

    Sent as ``<header>: <scheme> <token>`` (``Authorization: Bearer <token>`` by default;
    no scheme sends the token alone), or as the query parameter ``query_param`` instead.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID
    token_env: str
    header: str = "Authorization"
    scheme: str | None = "Bearer"
    query_param: str | None = None


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventRule:
    """Which events are the provider's, and what each changes.

    An event is this rule's when its topic is ``topic``, every dotted payload path of ``match``
    holds its value (or one of the values, for a list), and every header of ``headers``
    (names in any case) has its value (or one of them). Then the item, or list of items, at
    the payload path ``added`` becomes entities through the provider's template, and the
    items at ``removed`` are removed under their refs: a removed item needs only the fields
    that make its ref (those of the template's ``kind``, ``metadata.namespace`` and
    ``metadata.name``). With ``removed_field``, the values at ``removed`` may be bare values
    (an id, a slug) of that item field instead of objects. An empty path is the payload
    itself. A rule with neither ``added`` nor ``removed`` says the event is the provider's
    and changes nothing.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID
    topic: str
    match: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str | list[str]] = field(default_factory=dict)
    added: str | None = None
    removed: str | None = None
    removed_field: str | None = None

    def problem(self) -> str | None:
        """What makes the rule unusable, if anything."""
        if not self.topic:
            return "topic must not be empty"
        if any(not path for path in self.match):
            return "match: a path must not be empty (match the payload's fields)"
        if self.removed_field is not None and self.removed is None:
            return "removed_field needs removed (the path of the values)"
        if self.removed_field == "":
            return "removed_field must not be empty"
        return None

    def applies(self, event: Event) -> bool:
        """Whether ``event`` is this rule's."""
        if event.topic != self.topic:
            return False
        for name, wanted in self.headers.items():
            value = event.headers.get(name.lower(), _MISSING)
            if not _one_of(value, wanted):
                return False
        return all(
            _one_of(lookup(event.payload, path), wanted) for path, wanted in self.match.items()
        )


def _removed_field_problem(rule: EventRule, template: EntityTemplate) -> str | None:
    """Whether a bare value of ``removed_field`` is enough for the template's ref."""
    bare = rule.removed_field
    if bare is None:
        return None
    needs = [
        path
        for path in template.identity_paths()
        if path != bare and not path.startswith(bare + ".")
    ]
    if not needs:
        return None
    return (
        f"removed_field {bare!r} cannot make a ref alone: the template's kind, "
        f"metadata.namespace and metadata.name also use {', '.join(needs)}"
    )


def _one_of(value: Any, wanted: Any) -> bool:
    """``value`` is ``wanted``, or one of ``wanted`` when it is a list; ``true`` is not 1."""
    if value is _MISSING:
        return False
    choices = wanted if isinstance(wanted, list) else [wanted]
    return any(
        value == choice and isinstance(value, bool) == isinstance(choice, bool)
        for choice in choices
    )


def _nested(path: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``a.b``."""
    *parents, last = path.split(".")
    item: dict[str, Any] = {last: value}
    for key in reversed(parents):
        item = {key: item}
    return item


def _joined(*paths: str) -> str:
    return ".".join(path for path in paths if path)


def _found(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:80]


# -- the provider -------------------------------------------------------------------------


@dataclass
class HttpSession:
    """What ``next()`` needs during one burst: the client and the secrets to keep out of text."""

    client: httpx.Client
    secrets: Secrets
    auth_params: dict[str, str] = field(default_factory=dict)


class HttpProvider(IncrementalEntityProvider[Cursor, HttpSession]):
    """Reads a paginated JSON API; each item at ``items`` becomes an entity via ``entity``.

    With ``item_url`` the instance is a :class:`CheckedHttpProvider`, which asks the source
    about each removal candidate.
    """

    def __new__(cls, *args: Any, item_url: str | None = None, **kwargs: Any) -> HttpProvider:
        if item_url and cls is HttpProvider:
            return super().__new__(CheckedHttpProvider)
        return super().__new__(cls)

    def __init__(
        self,
        name: str,
        url: str,
        *,
        entity: EntityTemplate,
        items: str = "",
        pagination: Pagination | None = None,
        params: Mapping[str, str | int | float | bool] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: TokenAuth | None = None,
        timeout: float = 30.0,
        item_url: str | None = None,
        item_path: str = "",
        events: EventRule | Sequence[EventRule] | None = None,
    ) -> None:
        self.name = name
        self.url = httpx.URL(url)
        if self.url.scheme not in ("http", "https"):
            raise ProviderConfigError(f"provider {name!r}: url must be http(s), got {url!r}")
        self.entity = entity
        self.items = items
        self.pagination: Pagination = pagination or LinkHeader()
        self.params = {k: _scalar_text(v) for k, v in (params or {}).items()}
        self.headers = dict(headers or {})
        self.auth = auth
        self.timeout = timeout
        if auth is not None and auth.query_param:
            mask_in_logs([auth.query_param])
        public = Secrets(params=[auth.query_param] if auth and auth.query_param else [])
        self.location_key = "url:" + public.url(self.url.copy_with(query=None))
        self.item_url = _item_url(name, item_url, self.url) if item_url else None
        self.item_path = item_path
        rules = [events] if isinstance(events, EventRule) else list(events or ())
        for index, rule in enumerate(rules):
            problem = rule.problem() or _removed_field_problem(rule, entity)
            if problem is not None:
                raise ProviderConfigError(f"provider {name!r}: events[{index}]: {problem}")
        self.events: tuple[EventRule, ...] = tuple(rules)

    def default_options(self) -> Mapping[str, Any]:
        """Page numbers and offsets can skip an item while the source changes: without
        ``item_url`` to ask the source, an entity is removed only after two cycles missed it."""
        if self.item_url is None and isinstance(self.pagination, PageNumber | OffsetLimit):
            return {"remove_after_missed_cycles": 2}
        return {}

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[HttpSession], Any]) -> None:
        headers = {"Accept": "application/json", **self.headers}
        auth_params: dict[str, str] = {}
        tokens: list[str] = []
        params = [self.auth.query_param] if self.auth and self.auth.query_param else []
        if self.auth is not None:
            token = read_token(self.auth.token_env, f"provider {self.name!r}")
            tokens.append(token)
            if self.auth.query_param:
                auth_params[self.auth.query_param] = token
            else:
                headers[self.auth.header] = (
                    f"{self.auth.scheme} {token}" if self.auth.scheme else token
                )
        with httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.timeout), follow_redirects=False
        ) as client:
            burst(HttpSession(client, Secrets(tokens, params), auth_params))

    def next(
        self, context: HttpSession, cursor: Cursor | None = None
    ) -> EntityIteratorResult[Cursor]:
        secrets = context.secrets
        if cursor is not None and "url" in cursor:
            url = on_origin(cursor["url"], self.url, secrets)
            response = send(context.client, url, secrets, params=context.auth_params or None)
        else:
            query = {**self.params, **_query_of(self.pagination, cursor), **context.auth_params}
            response = send(context.client, self.url, secrets, params=query)
        check(response, secrets, self.auth.token_env if self.auth else None)
        body = json_body(response, secrets)
        where = f"GET {secrets.url(response.request.url)}"
        items = lookup(body, self.items)
        if not isinstance(items, list):
            found = "nothing" if items is _MISSING else type(items).__name__
            raise SourceError(f"{where}: expected a list of items at {self.items!r}, found {found}")
        entities, rejections = self._entities(items, where)
        try:
            following = self._after(cursor, body, response, len(items), secrets)
        except SourceError as exc:
            raise SourceError(f"{where}: {exc}") from None
        if following is not None and following == cursor:
            raise SourceError(f"{where}: the next page is this page again ({following}); stopping")
        return EntityIteratorResult(
            done=following is None, entities=entities, cursor=following, rejections=rejections
        )

    def _entities(
        self, items: Sequence[Any], where: str
    ) -> tuple[list[DeferredEntity], list[Rejection]]:
        entities: list[DeferredEntity] = []
        rejections: list[Rejection] = []
        for position, item in enumerate(items):
            if not isinstance(item, Mapping):
                rejections.append(
                    Rejection(
                        f"item #{position}",
                        f"{where}: expected a JSON object, got {type(item).__name__}",
                        "item",
                    )
                )
                continue
            entities.append(DeferredEntity(self.entity.render(item), self._location(item)))
        return entities, rejections

    # -- events ---------------------------------------------------------------------------

    def on_event(self, event: Event) -> EventDelta | None:
        """The delta of the first of ``events`` that ``event`` is (see :class:`EventRule`);
        ``None`` when it is no rule's.

        Added items become the entities a cycle makes of them (same template, same location
        key). A removed item's ref is the one the template gives it; a ref also added by the
        event is not removed. A path the payload lacks, an item that is not an object, or an
        item without the fields of its ref raises :class:`~ingestion.errors.EventRejected`
        naming the path; null or an empty list at a path is no item.
        """
        for index, rule in enumerate(self.events):
            if rule.applies(event):
                return self._delta(rule, f"events[{index}] (topic {rule.topic!r})", event.payload)
        return None

    def _delta(self, rule: EventRule, where: str, payload: Any) -> EventDelta:
        added: list[DeferredEntity] = []
        if rule.added is not None:
            for path, item in _event_items(payload, rule.added, where, "added"):
                added.append(self._added(item, path, where))
        removed: list[str] = []
        if rule.removed is not None:
            for path, value in _event_items(payload, rule.removed, where, "removed"):
                if rule.removed_field is not None and not isinstance(value, Mapping | list):
                    removed.append(self._bare_ref(rule.removed_field, value, path, where))
                else:
                    removed.append(self._removed_ref(value, path, where))
        kept = {_rendered_ref(deferred.entity) for deferred in added}
        return EventDelta(added=added, removed=[r for r in dict.fromkeys(removed) if r not in kept])

    def _added(self, item: Any, path: str, where: str) -> DeferredEntity:
        """The entity a cycle makes of ``item`` (at ``path`` in the payload)."""
        if not isinstance(item, Mapping):
            raise EventRejected(
                f"{where}: added: {path or 'the payload'} must be a JSON object, got {_found(item)}"
            )
        entity = self.entity.render(item)
        name = entity["metadata"].get("name") if isinstance(entity["metadata"], dict) else None
        if not isinstance(name, str) or not name:
            missing = _first_missing(item, self.entity.name_paths(), allow_null=False)
            said = f"has no {_joined(path, missing)}" if missing else "renders no metadata.name"
            raise EventRejected(f"{where}: added: the payload {said} (for metadata.name)")
        return DeferredEntity(entity, self._location(item))

    def _removed_ref(self, item: Any, path: str, where: str) -> str:
        """The ref of the removed item at ``path``; it needs the fields of its ref only."""
        if not isinstance(item, Mapping):
            raise EventRejected(
                f"{where}: removed: {path or 'the payload'} must be a JSON object, got "
                f"{_found(item)} (or set removed_field to the item field such values are)"
            )
        missing = _first_missing(item, self.entity.identity_paths(), allow_null=True)
        if missing is not None:
            raise EventRejected(
                f"{where}: removed: the payload has no {_joined(path, missing)} (for the ref)"
            )
        return self._checked_ref(item, path, where)

    def _bare_ref(self, field: str, value: Any, path: str, where: str) -> str:
        """The ref of the item whose ``field`` is ``value`` (found at ``path``)."""
        if value is None or value == "":
            raise EventRejected(f"{where}: removed: {path} holds {_found(value)}, not a {field}")
        return self._checked_ref(_nested(field, value), path, where)

    def _checked_ref(self, item: Mapping[str, Any], path: str, where: str) -> str:
        ref = _rendered_ref(self.entity.render(item))
        if not ref:
            raise EventRejected(
                f"{where}: removed: the item at {path or 'the payload'} renders no metadata.name"
            )
        return ref

    def _location(self, item: Any) -> str:
        """``url:<the item's own URL>`` with ``item_url``, else ``url:<the list's URL>``."""
        if self.item_url is not None:
            url = _render_url(self.item_url, item)
            if url is not None:
                return "url:" + url
        return self.location_key

    def _after(
        self,
        cursor: Cursor | None,
        body: Any,
        response: httpx.Response,
        count: int,
        secrets: Secrets,
    ) -> Cursor | None:
        if isinstance(self.pagination, LinkHeader):
            link = response.links.get("next", {}).get("url")
            if not link:
                return None
            resolved = response.request.url.join(link)
            return {"url": str(secrets.strip_params(on_origin(resolved, self.url, secrets)))}
        return self.pagination.after(cursor, body, count)


def _rendered_ref(entity: Mapping[str, Any]) -> str:
    """The ref of a rendered entity; empty when it has no name."""
    metadata = entity.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name or not isinstance(metadata, Mapping):
        return ""
    return entity_ref(str(entity.get("kind")), metadata.get("namespace"), name)


def _event_items(payload: Any, path: str, where: str, key: str) -> list[tuple[str, Any]]:
    """The items at ``path`` of an event's payload, each with its own path."""
    value = lookup(payload, path)
    if value is _MISSING:
        raise EventRejected(f"{where}: {key}: the payload has no {path}")
    if value is None:
        return []
    if isinstance(value, list):
        return [(_joined(path, str(position)), item) for position, item in enumerate(value)]
    return [(path, value)]


def _first_missing(item: Any, paths: Sequence[str], *, allow_null: bool) -> str | None:
    """The first of ``paths`` that ``item`` lacks (or holds as null, unless allowed)."""
    for path in paths:
        value = lookup(item, path)
        if value is _MISSING or (value is None and not allow_null):
            return path
    return None


def _item_url(name: str, template: str, url: httpx.URL) -> _Text | str:
    """``item_url`` compiled; it must be on the origin of ``url`` (the token goes there)."""
    origin = f"{url.scheme}://{url.netloc.decode()}/"
    if not template.startswith(origin):
        raise ProviderConfigError(
            f"provider {name!r}: item_url {template!r} must start with {origin} (the origin of "
            "url): the token is sent there"
        )
    compiled = _compile(template, "item_url")
    if not isinstance(compiled, _Text):
        raise ProviderConfigError(
            f"provider {name!r}: item_url {template!r} must hold a placeholder such as {{id}}"
        )
    return compiled


def _render_url(template: _Text | str, item: Any) -> str | None:
    """The item's URL, each value percent-encoded; ``None`` if the item lacks one."""
    if isinstance(template, str):
        return template
    out = []
    for is_path, text in template.parts:
        if not is_path:
            out.append(text)
            continue
        value = lookup(item, text)
        if value is _MISSING or value is None or isinstance(value, Mapping | list):
            return None
        out.append(quote(_scalar_text(value), safe=""))
    return "".join(out)


class CheckedHttpProvider(HttpProvider):
    """An :class:`HttpProvider` with ``item_url``: it checks removal candidates.

    ``HttpProvider(..., item_url=...)`` builds one. A provider without ``item_url`` has no
    ``check_removals`` at all, so that the engine has no checking phase for it.
    """

    def check_removals(
        self, context: HttpSession, candidates: Sequence[RemovalCandidate]
    ) -> RemovalCheck:
        """GET each candidate's ``item_url`` (kept in its location key): 404 or 410 is gone,
        200 is present (with a fresh entity rendered through the template; an item whose
        entity has another ref now is gone under the old one). A redirect (301, 302, 307,
        308) on the origin of ``url`` is followed, up to three in a row, and the item it
        leads to is judged the same way: a renamed item is present under its new ref. A
        redirect to another origin, and any other answer, keeps the candidate for this cycle
        and is logged. A 429 with ``Retry-After`` raises ``RetryAfter``: the checking phase
        resumes with this batch after the wait."""
        return check_each(candidates, lambda candidate: self._check_one(context, candidate))

    def _check_one(self, context: HttpSession, candidate: RemovalCandidate) -> Verdict:
        key = candidate.location_key or ""
        if self.item_url is None or not key.startswith("url:") or key == self.location_key:
            log.warning(
                "provider %s: kept %s for this cycle: no item URL to ask the source about it",
                self.name,
                candidate.ref,
            )
            return None
        secrets = context.secrets

        def get(url: httpx.URL) -> Fetched:
            response = send(context.client, url, secrets, params=context.auth_params or None)
            return response.status_code, response, None

        try:
            url = on_origin(key.removeprefix("url:"), self.url, secrets)
            status, response, _ = get_following(url, get, self.url, secrets)
        except SourceError as exc:  # unreachable, or a redirect not followed
            self._keep(candidate, str(exc))
            return None
        if status in (404, 410):
            return (None, False)
        if status == 401:
            check(response, secrets, self.auth.token_env if self.auth else None)
        wait = retry_after_seconds(response) if status in (429, 503) else None
        if wait is not None:
            raise RetryAfter(wait, describe(response, secrets))
        if status != 200:
            self._keep(candidate, describe(response, secrets))
            return None
        where = f"GET {secrets.url(response.request.url)}"
        try:
            item = lookup(json_body(response, secrets), self.item_path)
        except SourceError as exc:
            self._keep(candidate, str(exc))
            return None
        if not isinstance(item, Mapping):
            self._keep(candidate, f"{where}: expected a JSON object")
            return None
        entity = self.entity.render(item)
        ref = _rendered_ref(entity)
        if not ref:
            self._keep(candidate, f"{where}: the item renders without a name")
            return None
        return (DeferredEntity(entity, self._location(item)), ref == candidate.ref)

    def _keep(self, candidate: RemovalCandidate, why: str) -> None:
        log.warning("provider %s: kept %s for this cycle: %s", self.name, candidate.ref, why)


def _query_of(pagination: Pagination, cursor: Cursor | None) -> dict[str, Any]:
    return {} if isinstance(pagination, LinkHeader) else pagination.query(cursor)
