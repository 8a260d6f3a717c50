"""The operator page's routes: the page itself, the login page, and the session.

The page is static HTML, CSS and one JavaScript module tree under ``static/``; everything it
shows it reads from the admin JSON API with the session cookie. These routes only hand out the
files and manage the session.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, SecretStr

from ingestion.web.session import COOKIE, CSRF_HEADER, Sessions

log = logging.getLogger("ingestion.web")

#: The page loads nothing from elsewhere, runs no inline script and may not be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Login(BaseModel):
    token: SecretStr = Field(description="The admin token (INGESTION_ADMIN_TOKEN).")


class SessionInfo(BaseModel):
    login_required: bool = Field(description="False when the API runs without a token.")
    csrf: str | None = Field(description=f"Send it as {CSRF_HEADER} with every POST or DELETE.")
    expires: int | None = Field(description="When the session ends (epoch seconds).")


def _page(name: str) -> Response:
    html = resources.files("ingestion.web").joinpath("static", name).read_text("utf-8")
    return Response(html, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


def install(api: FastAPI, sessions: Sessions) -> None:
    """Serve the operator page at ``/``, its login page and session routes, and its files."""
    static = resources.files("ingestion.web").joinpath("static")
    api.mount("/static", StaticFiles(directory=str(static)), name="static")
    api.include_router(_router(sessions))


def _router(sessions: Sessions) -> APIRouter:
    router = APIRouter(tags=["page"], include_in_schema=False)
    _page_routes(router, sessions)
    _session_routes(router, sessions)
    return router


def _page_routes(router: APIRouter, sessions: Sessions) -> None:
    def signed_in(request: Request) -> bool:
        return not sessions.required or sessions.of(request) is not None

    @router.get("/")
    def page(request: Request) -> Response:
        if not signed_in(request):
            return RedirectResponse("/login", status_code=303)
        return _page("index.html")

    @router.get("/login")
    def login_page(request: Request) -> Response:
        if signed_in(request):
            return RedirectResponse("/", status_code=303)
        return _page("login.html")


def _session_routes(router: APIRouter, sessions: Sessions) -> None:
    @router.post("/login", response_model=SessionInfo)
    def login(body: Login, request: Request) -> Any:
        if not sessions.required:
            return SessionInfo(login_required=False, csrf=None, expires=None)
        if not sessions.token_matches(body.token.get_secret_value()):
            client = request.client.host if request.client else "?"
            log.warning("refused a login from %s: wrong admin token", client)
            raise HTTPException(401, "wrong token: it does not match INGESTION_ADMIN_TOKEN")
        value, session = sessions.issue()
        info = SessionInfo(login_required=True, csrf=session.csrf, expires=session.expires)
        response = JSONResponse(info.model_dump(), headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE,
            value,
            max_age=sessions.lifetime,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.get("/session", response_model=SessionInfo)
    def session(request: Request) -> Any:
        if not sessions.required:
            return SessionInfo(login_required=False, csrf=None, expires=None)
        current = sessions.of(request)
        if current is None:
            raise HTTPException(401, "not logged in: log in at /login")
        info = SessionInfo(login_required=True, csrf=current.csrf, expires=current.expires)
        return JSONResponse(info.model_dump(), headers={"Cache-Control": "no-store"})

    @router.post("/logout")
    def logout(request: Request) -> Any:
        current = sessions.of(request)
        if current is not None:
            sessions.admit(request)  # the CSRF token too: no other site can log anyone out
            sessions.revoke(current)
        response = JSONResponse({"message": "logged out"})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response
