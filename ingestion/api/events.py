"""Events in: the route sources deliver them to (its own token, or GitHub-style signed
webhooks), and the log of what was received and what each provider made of it."""

import hashlib
import hmac
import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ingestion.api.bodies import ErrorBody, EventAccepted, EventDetail, EventRecord, Events
from ingestion.api.params import MAX_ID, TopicPath
from ingestion.app import IncrementalIngestion
from ingestion.store.events import EventStatus
from ingestion.web import cross_site

#: The largest event body accepted (GitHub's webhooks stay under 25 MB; most are a few KB).
MAX_EVENT_BYTES = 5 * 1024 * 1024
SIGNATURE_HEADER = "x-hub-signature-256"


def webhook_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value of ``body`` under ``secret``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EventGate:
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


def delivery_router(
    ingestion: IncrementalIngestion,
    *,
    events_token: str | None,
    webhook_secret: str | None,
    open_api: bool,
) -> APIRouter:
    router = APIRouter(tags=["events"])
    bearer = HTTPBearer(auto_error=False, description="INGESTION_EVENTS_TOKEN")
    gate = EventGate(events_token, webhook_secret, open_api)

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


def event_log_router(ingestion: IncrementalIngestion) -> APIRouter:
    """The stored events, for operators (behind the admin token)."""
    router = APIRouter(tags=["events"], responses={404: {"model": ErrorBody}})

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

    return router
