"""Browser sessions of the operator page: a signed cookie and a CSRF token bound to it.

The cookie holds ``<id>.<expiry>.<signature>``: a random id, its expiry (epoch seconds) and an
HMAC-SHA256 of both under a key derived from the admin token. It never holds the token itself;
changing the token ends every session. The CSRF token is another HMAC of the id, so it is bound
to the session and cannot be computed without the key: the page reads it from ``GET /session``
and sends it as ``X-CSRF-Token`` with every request that changes something (double submit).
Logging out revokes the id in this process until its expiry, and clears the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

#: The cookie's name.
COOKIE = "ingestion_session"
#: The header that carries the CSRF token of the session.
CSRF_HEADER = "X-CSRF-Token"
#: How long a session lasts after logging in.
LIFETIME_SECONDS = 8 * 3600
#: Methods that change nothing: they need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    """A valid session: its id, when it ends, and its CSRF token."""

    id: str
    expires: int
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sessions:
    """Issues and checks the sessions of one admin token (``None``: the API is open)."""

    def __init__(
        self,
        admin_token: str | None,
        *,
        lifetime: int = LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = admin_token.encode() if admin_token else None
        self._key = (
            hmac.new(self._token, b"ingestion web session v1", hashlib.sha256).digest()
            if self._token
            else b""
        )
        self._lifetime = lifetime
        self._clock = clock
        self._revoked: dict[str, int] = {}  # session id -> its expiry
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Whether a login is needed (an admin token is configured)."""
        return self._token is not None

    @property
    def lifetime(self) -> int:
        """Seconds a session lasts."""
        return self._lifetime

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the admin token (compared in constant time)."""
        return self._token is not None and hmac.compare_digest(given.encode(), self._token)

    def _sign(self, *parts: str) -> str:
        message = "|".join(parts).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self) -> tuple[str, Session]:
        """A new session and the cookie value that carries it."""
        sid = secrets.token_urlsafe(24)
        expires = int(self._clock()) + self._lifetime
        value = f"{sid}.{expires}.{self._sign('session', sid, str(expires))}"
        return value, Session(sid, expires, self._sign("csrf", sid))

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie value carries, or ``None`` if it is forged, expired or revoked."""
        if not cookie or not self.required:
            return None
        try:
            sid, expires_text, signature = cookie.split(".")
            expires = int(expires_text)
        except ValueError:
            return None
        expected = self._sign("session", sid, expires_text)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        now = int(self._clock())
        if expires <= now:
            return None
        with self._lock:
            if sid in self._revoked:
                return None
        return Session(sid, expires, self._sign("csrf", sid))

    def revoke(self, session: Session) -> None:
        """End ``session`` in this process (its cookie stays refused until it would expire)."""
        now = int(self._clock())
        with self._lock:
            self._revoked = {sid: end for sid, end in self._revoked.items() if end > now}
            self._revoked[session.id] = session.expires

    def of(self, request: Request) -> Session | None:
        return self.read(request.cookies.get(COOKIE))

    def admit(self, request: Request) -> bool:
        """Whether ``request`` is admitted by its session cookie.

        A request that changes something must also carry the session's CSRF token, else 403.
        A cookie that is present but no longer valid answers 401 saying so.
        """
        if COOKIE not in request.cookies or not self.required:
            return False
        session = self.of(request)
        if session is None:
            raise HTTPException(
                401,
                "the session has ended (logged out, expired, or the admin token changed): "
                "log in again at /login",
            )
        if request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                raise HTTPException(
                    403,
                    f"missing or wrong {CSRF_HEADER} header: a request made with the session "
                    "cookie must carry the token the page got from GET /session",
                )
        return True


def cross_site(request: Request) -> bool:
    """Whether a browser says ``request`` comes from another site (``Origin`` or fetch metadata).

    Requests without those headers (curl, scripts) are not cross-site.
    """
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("origin")
    if not origin:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc != request.headers.get("host", "")
