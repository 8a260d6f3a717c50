"""Session cookies of the operator page, alone: signing, expiry, revocation, CSRF binding."""

from __future__ import annotations

import pytest

from ingestion.web import Sessions
from tests.support.tokens import tampered

TOKEN = "session-admin-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(10)
def test_a_cookie_is_signed_by_the_token_and_never_holds_it() -> None:
    sessions = Sessions(TOKEN)
    value, session = sessions.issue()
    assert TOKEN not in value and TOKEN not in session.csrf
    assert sessions.read(value) == session
    sid, expires, signature = value.split(".")
    assert sessions.read(f"{sid}.{int(expires) + 3600}.{signature}") is None  # extended
    assert sessions.read(f"{tampered(sid)}.{expires}.{signature}") is None  # another id
    assert sessions.read("garbage") is None
    # Another token, another key: every session ends when the token changes.
    assert Sessions(TOKEN + "-rotated").read(value) is None
    assert Sessions(None).read(value) is None


@pytest.mark.timeout(10)
def test_a_session_expires_and_a_revoked_one_stays_refused() -> None:
    clock = Clock()
    sessions = Sessions(TOKEN, lifetime=60, clock=clock)
    value, session = sessions.issue()
    other, _ = sessions.issue()
    clock.now += 59
    assert sessions.read(value) == session
    sessions.revoke(session)
    assert sessions.read(value) is None
    assert sessions.read(other) is not None  # only that session ended
    clock.now += 1
    assert sessions.read(other) is None  # expired


@pytest.mark.timeout(10)
def test_the_csrf_token_is_bound_to_its_session() -> None:
    sessions = Sessions(TOKEN)
    _, one = sessions.issue()
    _, two = sessions.issue()
    assert one.csrf != two.csrf
    assert sessions.token_matches(TOKEN)
    assert not sessions.token_matches(TOKEN[:-1])
    assert not Sessions(None).token_matches("")
