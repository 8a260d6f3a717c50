"""The admin HTTP API: see and steer every provider, read the catalog, scrape metrics.

Routes under ``/incremental`` mirror the admin router of Backstage's incremental ingestion
module; ``/entities`` reads the catalog and ``/metrics`` serves Prometheus. Every route but
``/incremental/health`` needs ``Authorization: Bearer <INGESTION_ADMIN_TOKEN>``, or the session
cookie of the operator page (:mod:`ingestion.web`, served at ``/``) with, on a POST or DELETE,
its CSRF token.
"""

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingestion import metrics
from ingestion.api.bodies import (
    Bursts,
    Changes,
    Checkpoints,
    CycleRecord,
    Cycles,
    Deleted,
    Entities,
    ErrorBody,
    ErrorRecord,
    ErrorRules,
    Errors,
    EventAccepted,
    EventDetail,
    EventRecord,
    Events,
    Health,
    Kept,
    ProviderDetail,
    ProviderSummary,
    Removed,
    Step,
    burst_record,
    change_record,
    checkpoint,
    cycle_record,
    provider_detail,
    step_result,
)
from ingestion.api.params import (
    MAX_ID,
    AfterRef,
    KindFilter,
    ProviderFilter,
    ProviderName,
    RefPath,
    RuleFilter,
    SearchText,
    TopicPath,
)
from ingestion.app import IncrementalIngestion
from ingestion.catalog import CatalogEntity
from ingestion.errors import DatabaseUnavailable, InsecureConfiguration, UnknownProvider
from ingestion.store import Doorbell, ErrorKind, stats
from ingestion.store.events import EventStatus
from ingestion.web import SAFE_METHODS, Sessions, cross_site
from ingestion.web import install as install_page

log = logging.getLogger("ingestion.api")

#: Tokens shorter than this are refused: a bearer token is the whole of the API's protection.
MIN_TOKEN_LENGTH = 16


class ApiSettings(BaseSettings):
    """Settings of the admin API, read from ``INGESTION_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="INGESTION_", extra="ignore")

    admin_token: SecretStr | None = Field(
        None, description="Bearer token every route but health requires."
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="A second bearer token that may read /metrics only, for Prometheus; "
        "the admin token is accepted there too.",
    )
    events_token: SecretStr | None = Field(
        None,
        description="Bearer token of POST /incremental/events/{topic} only: sources that "
        "send events hold this one, not the admin token.",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Shared secret of webhooks signed the way GitHub signs them "
        "(X-Hub-Signature-256: sha256=HMAC of the body); such a request needs no token.",
    )
    api_host: str = Field("127.0.0.1", description="Interface the API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")


# -- the app ------------------------------------------------------------------------------


def create_api(
    ingestion: IncrementalIngestion,
    *,
    admin_token: str | None = None,
    metrics_token: str | None = None,
    events_token: str | None = None,
    webhook_secret: str | None = None,
    insecure: bool = False,
) -> FastAPI:
    """The admin API of ``ingestion``.

    Refuses (:class:`InsecureConfiguration`) to build without an ``admin_token`` of at least
    16 characters, unless ``insecure`` is true: then every route is open, for local use only.
    """
    _check_tokens(admin_token, metrics_token, insecure, events_token, webhook_secret)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if insecure and not admin_token:
            log.warning("the admin API runs WITHOUT a token: anyone who reaches it can steer")
        try:
            ingestion.store.ensure_providers(ingestion.providers)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            log.warning("could not register the providers in the database yet: %s", exc)
        yield

    api = FastAPI(
        title="Incremental ingestion admin API",
        version="1",
        description="See and steer the providers of an incremental ingestion deployment.",
        lifespan=lifespan,
        responses={401: {"model": ErrorBody}},
    )
    bearer = HTTPBearer(auto_error=False, description="INGESTION_ADMIN_TOKEN")
    Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    sessions = Sessions(admin_token)
    check = _authenticator(sessions, open_api=insecure and not admin_token)

    def require_admin(request: Request, credentials: Credentials) -> None:
        check(request, credentials, admin_token)

    def require_metrics(request: Request, credentials: Credentials) -> None:
        check(request, credentials, admin_token, metrics_token)

    _install_error_handlers(api)
    api.include_router(_incremental_router(ingestion), prefix="/incremental")
    api.include_router(
        _admin_router(ingestion), prefix="/incremental", dependencies=[Depends(require_admin)]
    )
    api.include_router(_catalog_router(ingestion), dependencies=[Depends(require_admin)])
    registry = metrics.registry_for(
        ingestion.store.db, overdue_after=ingestion.settings.reconcile_interval
    )

    @api.get("/metrics", dependencies=[Depends(require_metrics)], tags=["metrics"])
    def prometheus() -> Response:
        """Prometheus metrics of every provider, read from the database."""
        return Response(metrics.render(registry), media_type=CONTENT_TYPE_LATEST)

    api.include_router(
        _events_router(
            ingestion,
            events_token=events_token,
            webhook_secret=webhook_secret,
            open_api=insecure and not admin_token,
        ),
        prefix="/incremental",
    )
    install_page(api, sessions)
    return api


Check = Callable[..., None]


def _authenticator(sessions: Sessions, *, open_api: bool) -> Check:
    """``check(request, credentials, *tokens)``: admit the request or raise 401 or 403.

    A bearer token must be one of ``tokens``; without one, the page's session cookie admits the
    request (with its CSRF token on a POST or DELETE). An open API refuses only requests a
    browser marks as cross-site that would change something.
    """

    def check(
        request: Request, credentials: HTTPAuthorizationCredentials | None, *tokens: str | None
    ) -> None:
        if open_api:
            if request.method not in SAFE_METHODS and cross_site(request):
                raise HTTPException(403, "refused a cross-site request to steer the API")
            return
        if credentials is None and sessions.admit(request):
            return
        if credentials is None:
            raise HTTPException(
                401,
                "missing bearer token: send the header 'Authorization: Bearer <token>' with "
                "the value of INGESTION_ADMIN_TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = credentials.credentials.encode()
        if not any(t and hmac.compare_digest(given, t.encode()) for t in tokens):
            raise HTTPException(
                401,
                "wrong bearer token: it does not match INGESTION_ADMIN_TOKEN",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return check


def _check_tokens(
    admin_token: str | None,
    metrics_token: str | None,
    insecure: bool,
    events_token: str | None = None,
    webhook_secret: str | None = None,
) -> None:
    for label, token in (
        ("admin", admin_token),
        ("metrics", metrics_token),
        ("events", events_token),
        ("webhook secret", webhook_secret),
    ):
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise InsecureConfiguration(
                f"the {label} token is too short: use at least {MIN_TOKEN_LENGTH} random "
                "characters (python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
    if not admin_token and not insecure:
        raise InsecureConfiguration(
            "refusing to serve the admin API without a token: set INGESTION_ADMIN_TOKEN, or "
            "pass --insecure (insecure=True) to run it open, for local use only"
        )


def _incremental_router(ingestion: IncrementalIngestion) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", response_model=Health, responses={503: {"model": Health}})
    def health() -> Any:
        """Healthy, or the providers with more than one open cycle (no token needed)."""
        try:
            duplicated = stats.open_cycles(ingestion.store.db)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
            log.warning("health check: %s", exc)
            message = database_message(cause) if isinstance(cause, SQLAlchemyError) else str(exc)
            body = Health(healthy=False, error=message)
            return JSONResponse(body.model_dump(mode="json"), status_code=503)
        return Health(healthy=not duplicated, providers=duplicated)

    return router


def _admin_router(ingestion: IncrementalIngestion) -> APIRouter:  # noqa: C901 - one route each
    router = APIRouter(tags=["providers"], responses={404: {"model": ErrorBody}})

    def registered(name: ProviderName) -> str:
        ingestion.registered(name)  # UnknownProvider answers 404
        return name

    Name = Annotated[str, Depends(registered)]

    @router.get("/providers", response_model=list[ProviderSummary])
    def providers() -> list[ProviderSummary]:
        """Every registered provider and where it stands."""
        return [provider_detail(ingestion, name) for name in sorted(ingestion.providers)]

    @router.get("/providers/{name}", response_model=ProviderDetail)
    def provider(name: Name) -> ProviderDetail:
        """The provider's actions, attempts, last error, cycle progress and blocked sweep."""
        return provider_detail(ingestion, name)

    @router.get("/providers/{name}/cycles", response_model=Cycles)
    def cycles(name: Name, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Cycles:
        """The provider's cycles, newest first: counts, removals, blocked removals, duration."""
        return Cycles(items=[cycle_record(r) for r in ingestion.store.cycles(name, limit)])

    @router.get("/providers/{name}/cycles/{cycle_id}", response_model=CycleRecord)
    def cycle(name: Name, cycle_id: Annotated[int, FastApiPath(ge=1, le=MAX_ID)]) -> CycleRecord:
        """One cycle of the provider."""
        row = ingestion.store.cycle(name, cycle_id)
        if row is None:
            raise HTTPException(404, f"provider {name!r} has no cycle {cycle_id}")
        return cycle_record(row)

    @router.get("/providers/{name}/bursts", response_model=Bursts)
    def bursts(name: Name, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> Bursts:
        """The provider's bursts, newest first: outcome, pages, entities, duration, error."""
        return Bursts(items=[burst_record(r) for r in ingestion.store.bursts(name, limit)])

    def steer(name: str, step: Callable[[str], Doorbell], message: str) -> Step:
        return step_result(step(name), message)

    @router.post("/providers/{name}/trigger", response_model=Step)
    def trigger(name: Name) -> Step:
        """Run the provider's due step now (a running burst is left alone)."""
        return steer(name, ingestion.trigger, "the pending step is due now")

    @router.post("/providers/{name}/start", response_model=Step)
    def start(name: Name) -> Step:
        """End the rest, or cancel the open cycle, and begin a new cycle now."""
        return steer(name, ingestion.start, "a new cycle begins now")

    @router.post("/providers/{name}/cancel", response_model=Step)
    def cancel(name: Name) -> Step:
        """Cancel the open cycle without sweeping; the provider rests until started."""
        return steer(name, ingestion.cancel, "the open cycle is cancelled; start begins a new one")

    @router.delete("/providers/{name}", response_model=Step)
    def reset(name: Name) -> Step:
        """Purge the provider's ingestion records and begin afresh; its entities stay."""
        return steer(
            name,
            ingestion.reset,
            "ingestion records purged and a new cycle begins now; the provider's entities "
            "stay until a completed cycle sweeps them",
        )

    @router.get("/providers/{name}/checkpoints", response_model=Checkpoints)
    @router.get(
        "/providers/{name}/marks",
        response_model=Checkpoints,
        deprecated=True,
        description="The same as /checkpoints, under the name Backstage's admin API uses.",
    )
    def checkpoints(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cycle: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    ) -> Checkpoints:
        """The provider's page checkpoints (the cursor after each page), newest first."""
        rows = ingestion.store.checkpoints(name, limit=limit, cycle_id=cycle)
        return Checkpoints(items=[checkpoint(r) for r in rows])

    def delete_checkpoints(name: str | None) -> Deleted:
        deleted = ingestion.store.delete_closed_checkpoints(name)
        return Deleted(deleted=deleted, message=f"deleted {deleted} checkpoints of closed cycles")

    @router.delete("/providers/{name}/checkpoints", response_model=Deleted)
    @router.delete("/providers/{name}/marks", response_model=Deleted, deprecated=True)
    def delete_provider_checkpoints(name: Name) -> Deleted:
        """Delete the checkpoints of the provider's closed cycles."""
        return delete_checkpoints(name)

    @router.post("/cleanup", response_model=Deleted)
    def cleanup() -> Deleted:
        """Delete the checkpoints of every provider's closed cycles."""
        return delete_checkpoints(None)

    def entities_page(rows: list[dict[str, Any]], limit: int) -> Entities:
        items = [CatalogEntity.from_row(r) for r in rows]
        return Entities(items=items, next_after=items[-1].ref if len(items) == limit else None)

    @router.get("/events", response_model=Events, tags=["events"])
    def events(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        status: Annotated[EventStatus | None, Query()] = None,
    ) -> Events:
        """Stored events, newest first, with what each provider made of them."""
        rows = ingestion.store.recent_events(
            limit=limit, before=before, status=status.value if status else None
        )
        items = [EventRecord.model_validate(r) for r in rows]
        return Events(items=items, next_before=items[-1].id if len(items) == limit else None)

    @router.get("/events/{event_id}", response_model=EventDetail, tags=["events"])
    def event(event_id: Annotated[int, FastApiPath(ge=1, le=MAX_ID)]) -> EventDetail:
        """One stored event, with its payload and headers."""
        row = ingestion.store.event(event_id)
        if row is None:
            raise HTTPException(404, f"no event {event_id}")
        return EventDetail.model_validate(row)

    @router.get("/providers/{name}/held-removals", response_model=Entities)
    def held_removals(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: AfterRef = None,
    ) -> Entities:
        """The entities a sweep guard holds back from removal, in ref order."""
        rows = ingestion.store.held_removals(name, after=after, limit=limit)
        return entities_page(rows, limit)

    @router.post("/providers/{name}/held-removals/approve", response_model=Removed)
    def approve_held_removals(name: Name) -> Removed:
        """Remove the held-back entities now and clear the block."""
        removed = ingestion.store.approve_held_removals(name)
        return Removed(
            removed=removed, message=f"provider {name!r}: {removed} held-back entities removed"
        )

    @router.post("/providers/{name}/held-removals/dismiss", response_model=Kept)
    def dismiss_held_removals(name: Name) -> Kept:
        """Keep the held-back entities and clear the block."""
        kept = ingestion.store.dismiss_held_removals(name)
        return Kept(kept=kept, message=f"provider {name!r}: {kept} held-back entities kept")

    @router.get("/providers/{name}/waiting-removals", response_model=Entities)
    def waiting_removals(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: AfterRef = None,
    ) -> Entities:
        """Entities missing from the last completed cycle that remove_after_missed_cycles keeps."""
        options = ingestion.registered(name).options
        rows = ingestion.store.waiting_removals(name, options, after=after, limit=limit)
        return entities_page(rows, limit)

    @router.get("/providers/{name}/errors", response_model=Errors)
    def errors(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="Only records older than this id.")
        ] = None,
        kind: Annotated[list[ErrorKind] | None, Query()] = None,
        rule: RuleFilter = None,
    ) -> Errors:
        """Rejected entities, warnings and burst errors, newest first, a page at a time."""
        rows = ingestion.store.errors(name, limit=limit, before=before, kinds=kind, rule=rule)
        items = [ErrorRecord(**r) for r in rows]
        return Errors(items=items, next_before=items[-1].id if len(items) == limit else None)

    @router.get("/providers/{name}/error-rules", response_model=ErrorRules)
    def error_rules(name: Name) -> ErrorRules:
        """The rules the provider's error records name, with how many records name each."""
        return ErrorRules(rules=ingestion.store.error_rules(name))

    return router


#: The largest event body accepted (GitHub's webhooks stay under 25 MB; most are a few KB).
MAX_EVENT_BYTES = 5 * 1024 * 1024
SIGNATURE_HEADER = "x-hub-signature-256"


def webhook_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value of ``body`` under ``secret``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _EventGate:
    """Who may deliver an event: the events token, a webhook signature, or anyone (open API)."""

    def __init__(
        self, events_token: str | None, webhook_secret: str | None, open_api: bool
    ) -> None:
        self.events_token = events_token
        self.webhook_secret = webhook_secret
        self.open_api = open_api

    def admit(self, request: Request, credentials: HTTPAuthorizationCredentials | None) -> bool:
        """What can be decided before the body is read: refuse (401, 403), admit (``False``),
        or admit once the body's signature is checked (``True``)."""
        if self.webhook_secret and request.headers.get(SIGNATURE_HEADER) is not None:
            return True
        if credentials is not None and self.events_token:
            if not hmac.compare_digest(
                credentials.credentials.encode(), self.events_token.encode()
            ):
                raise HTTPException(
                    401,
                    "wrong bearer token: it does not match INGESTION_EVENTS_TOKEN",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            return False
        if self.open_api and not (self.events_token or self.webhook_secret):
            if cross_site(request):
                raise HTTPException(403, "refused a cross-site request to deliver an event")
            return False
        if not (self.events_token or self.webhook_secret):
            raise HTTPException(
                403,
                "events are not enabled: set INGESTION_EVENTS_TOKEN (a bearer token for "
                "senders) or INGESTION_WEBHOOK_SECRET (signed webhooks)",
            )
        wanted = " or ".join(
            what
            for what, given in (
                ("'Authorization: Bearer <INGESTION_EVENTS_TOKEN>'", self.events_token),
                (f"a {SIGNATURE_HEADER} signature", self.webhook_secret),
            )
            if given
        )
        raise HTTPException(401, f"an event needs {wanted}", headers={"WWW-Authenticate": "Bearer"})

    def check_signature(self, request: Request, body: bytes) -> None:
        assert self.webhook_secret is not None
        expected = webhook_signature(self.webhook_secret, body)
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(
                401,
                f"the {SIGNATURE_HEADER} header does not match the body signed with "
                "INGESTION_WEBHOOK_SECRET",
            )


async def read_body(request: Request) -> bytes:
    """The body, refused (413) as soon as it is known to be too large."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
        raise HTTPException(413, f"an event body holds {MAX_EVENT_BYTES} bytes at most")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_EVENT_BYTES:
            raise HTTPException(413, f"an event body holds {MAX_EVENT_BYTES} bytes at most")
        chunks.append(chunk)
    return b"".join(chunks)


def _events_router(
    ingestion: IncrementalIngestion,
    *,
    events_token: str | None,
    webhook_secret: str | None,
    open_api: bool,
) -> APIRouter:
    router = APIRouter(tags=["events"])
    bearer = HTTPBearer(auto_error=False, description="INGESTION_EVENTS_TOKEN")
    gate = _EventGate(events_token, webhook_secret, open_api)

    @router.post(
        "/events/{topic}",
        status_code=202,
        response_model=EventAccepted,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            413: {"model": ErrorBody},
        },
    )
    async def receive_event(
        topic: TopicPath,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> EventAccepted:
        """Accept an event from a source (a GitHub webhook: topic ``github``).

        The event is stored before the answer (202) and applied by a worker soon after; a
        delivery id seen before (``X-GitHub-Delivery``, ``X-Delivery-Id`` or
        ``Idempotency-Key``) is answered 202 again and applied once.
        """
        # Credentials first: nobody gets a large body read without them.
        signed = gate.admit(request, credentials)
        body = await read_body(request)
        if signed:
            gate.check_signature(request, body)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None
        accepted = await run_in_threadpool(
            ingestion.accept_event, topic, payload, headers=dict(request.headers)
        )
        message = (
            "delivered before; applied once"
            if accepted.duplicate
            else "stored; a worker applies it shortly"
        )
        return EventAccepted(id=accepted.id, duplicate=accepted.duplicate, message=message)

    return router


def _catalog_router(ingestion: IncrementalIngestion) -> APIRouter:
    router = APIRouter(tags=["catalog"], responses={404: {"model": ErrorBody}})

    @router.get("/changes", response_model=Changes)
    def changes(
        after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Changes:
        """The catalog's changes after the id ``after``, oldest first: ask again with
        ``after=next_after`` to follow the feed from where you stopped."""
        items = [change_record(r) for r in ingestion.store.changes(after=after, limit=limit)]
        return Changes(items=items, next_after=items[-1].id if items else after)

    @router.get("/entities", response_model=Entities)
    def entities(
        provider: ProviderFilter = None,
        kind: KindFilter = None,
        q: SearchText = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: AfterRef = None,
    ) -> Entities:
        """Entities in ref order, ``limit`` at a time (keyset pagination with ``after``)."""
        if provider is not None:
            ingestion.registered(provider)  # UnknownProvider answers 404
        rows = ingestion.store.entities_page(
            provider=provider,
            kind=kind,
            after=after.lower() if after else None,
            limit=limit,
            contains=q or None,
        )
        items = [CatalogEntity.from_row(r) for r in rows]
        return Entities(items=items, next_after=items[-1].ref if len(items) == limit else None)

    @router.get("/entities/{ref:path}", response_model=CatalogEntity)
    def entity(ref: RefPath) -> CatalogEntity:
        """One entity by its ref, ``kind:namespace/name`` (case does not matter)."""
        found = ingestion.catalog.get(ref)
        if found is None:
            raise HTTPException(404, f"no entity {ref.lower()!r} in the catalog")
        return found

    return router


# -- errors -------------------------------------------------------------------------------


def _first(exc: BaseException) -> str:
    origin = getattr(exc, "orig", None) or exc
    return (str(origin).strip().split("\n", 1)[0] or type(origin).__name__)[:300]


def database_message(exc: SQLAlchemyError) -> str:
    """A database failure in a sentence an operator can act on (never the URL)."""
    detail = _first(exc)
    if isinstance(exc, (OperationalError, ProgrammingError)) and (
        "does not exist" in detail or "no such table" in detail
    ):
        return f"the database has no ingestion schema ({detail}): run 'ingestion migrate'"
    return (
        f"the database could not answer ({detail}): check that it is up and that "
        "INGESTION_DATABASE_URL points to it"
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        ErrorBody(error=message, status=status).model_dump(), status_code=status, headers=headers
    )


class _JsonServerErrors:
    """Answers an unexpected exception with the JSON error body (500) and one log record.

    Anything that reaches it is a bug: the log gets the traceback, the client never the
    exception's text, which may quote a value it should not see.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:  # too late for another answer; the server closes the connection
                raise
            log.exception("unexpected error answering %s %r", scope["method"], scope["path"])
            await _error(500, "internal error: the API's log has the details")(scope, receive, send)


def _install_error_handlers(api: FastAPI) -> None:
    api.add_middleware(_JsonServerErrors)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route; the routes are listed at /docs"
        return _error(exc.status_code, message, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for problem in exc.errors():
            where = " ".join(str(part) for part in problem.get("loc", ()))
            problems.append(f"{where}: {problem.get('msg', 'invalid')}")
        return _error(422, "invalid request: " + "; ".join(problems))

    @api.exception_handler(UnknownProvider)
    async def unknown_provider(_: Request, exc: UnknownProvider) -> JSONResponse:
        return _error(404, str(exc))

    @api.exception_handler(SQLAlchemyError)
    async def database_error(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error: %s", _first(exc))
        return _error(503, database_message(exc))

    @api.exception_handler(DatabaseUnavailable)
    async def database_unavailable(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, SQLAlchemyError):
            return await database_error(_, cause)
        log.error("database error: %s", exc)
        return _error(503, str(exc))
