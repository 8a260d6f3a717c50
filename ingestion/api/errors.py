"""How the API answers errors: one JSON body, ``{"error": ..., "status": ...}``, never a
traceback or a database URL."""

import json
import logging
import re
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingestion.api.bodies import ErrorBody
from ingestion.errors import DatabaseUnavailable, UnknownProvider

log = logging.getLogger("ingestion.api")

# Postgres refusing a connection to a database no one created (not a missing table).
_NO_DATABASE = re.compile(r'database ".*" does not exist')


def _first(exc: BaseException) -> str:
    origin = getattr(exc, "orig", None) or exc
    return (str(origin).strip().split("\n", 1)[0] or type(origin).__name__)[:300]


def database_message(exc: SQLAlchemyError) -> str:
    """A database failure in a sentence an operator can act on (never the URL)."""
    detail = _first(exc)
    if isinstance(exc, OperationalError) and _NO_DATABASE.search(detail):
        return (
            f"the database does not exist ({detail}): create it (on Postgres, `createdb`), "
            "then run 'ingestion migrate'"
        )
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


def install_error_handlers(api: FastAPI) -> None:
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
