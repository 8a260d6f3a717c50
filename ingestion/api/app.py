"""The admin HTTP API: see and steer every provider, read the catalog, scrape metrics.

Routes under ``/incremental`` mirror the admin router of Backstage's incremental ingestion
module; ``/entities`` reads the catalog and ``/metrics`` serves Prometheus. Every route but
``/incremental/health`` needs ``Authorization: Bearer <INGESTION_ADMIN_TOKEN>``, or the session
cookie of the operator page (:mod:`ingestion.web`, served at ``/``) with, on a POST or DELETE,
its CSRF token; the events route takes its own token or a signature.

This module builds the app and checks who may call it; the routes live in modules by job:
:mod:`~ingestion.api.providers`, :mod:`~ingestion.api.catalog`, :mod:`~ingestion.api.events`,
and :mod:`~ingestion.api.errors` answers what goes wrong.
"""

import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import SQLAlchemyError

from ingestion import metrics
from ingestion.api.bodies import ErrorBody, Health
from ingestion.api.catalog import catalog_router
from ingestion.api.errors import database_message, install_error_handlers
from ingestion.api.events import delivery_router, event_log_router
from ingestion.api.providers import providers_router
from ingestion.app import IncrementalIngestion
from ingestion.errors import DatabaseUnavailable, InsecureConfiguration
from ingestion.store import stats
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

    admin = [Depends(require_admin)]
    install_error_handlers(api)
    api.include_router(_incremental_router(ingestion), prefix="/incremental")
    api.include_router(providers_router(ingestion), prefix="/incremental", dependencies=admin)
    api.include_router(event_log_router(ingestion), prefix="/incremental", dependencies=admin)
    api.include_router(catalog_router(ingestion), dependencies=admin)
    registry = metrics.registry_for(
        ingestion.store.db, overdue_after=ingestion.settings.reconcile_interval
    )

    @api.get("/metrics", dependencies=[Depends(require_metrics)], tags=["metrics"])
    def prometheus() -> Response:
        """Prometheus metrics of every provider, read from the database."""
        return Response(metrics.render(registry), media_type=CONTENT_TYPE_LATEST)

    api.include_router(
        delivery_router(
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
