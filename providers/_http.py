"""What the HTTP providers share: tokens from the environment, redaction, errors, rate limits."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote_plus

import httpx

from ingestion.errors import ProviderError, RetryAfter, SourceRefused
from ingestion.provider import DeferredEntity, RemovalCandidate, RemovalCheck

#: Query parameters whose values are never shown, whatever the provider's configuration.
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "client_secret",
        "code",
        "key",
        "password",
        "secret",
        "sig",
        "signature",
        "token",
    }
)
MASK = "***"
_BODY_LIMIT = 300


class SourceError(ProviderError):
    """The source could not be read; the message says the URL (without secrets) and why."""


class SourceUnavailable(SourceError):
    """A transient failure (connection, timeout, 5xx): the engine's backoff retries it."""


class TokenRefused(SourceError, SourceRefused):
    """The source answered 401, or the token's variable is unset: the token is missing, wrong
    or expired. Retrying cannot fix that, so the provider is parked until an operator starts
    it again (see :class:`ingestion.errors.SourceRefused`)."""


def read_token(env: str, what: str) -> str:
    """The token in the environment variable ``env``; an error naming the variable if unset."""
    token = os.environ.get(env, "").strip()
    if not token:
        raise TokenRefused(f"{what}: the environment variable {env} that holds the token is unset")
    return token


class Secrets:
    """The secret values of one burst and the query parameters that carry secrets."""

    def __init__(self, values: Iterable[str] = (), params: Collection[str] = ()) -> None:
        self.values = [v for v in values if v]
        self.params = SECRET_PARAMS | {p.lower() for p in params}

    def text(self, text: str) -> str:
        """``text`` with every secret value masked."""
        for value in self.values:
            text = text.replace(value, MASK)
        return text

    def url(self, url: httpx.URL | str) -> str:
        """``url`` without user info and with secret query parameters masked."""
        parsed = httpx.URL(str(url))
        if parsed.userinfo:
            parsed = parsed.copy_with(username=None, password=None)
        parts = [
            f"{part.split('=', 1)[0]}={MASK}" if self._secret(part) else part
            for part in _query_parts(parsed)
        ]
        shown = str(parsed.copy_with(query=None))
        return self.text(shown + ("?" + "&".join(parts) if parts else ""))

    def strip_params(self, url: httpx.URL) -> httpx.URL:
        """``url`` without its secret query parameters, encoded as it was (for a cursor)."""
        parts = [part for part in _query_parts(url) if not self._secret(part)]
        return url.copy_with(query="&".join(parts).encode() or None)

    def _secret(self, part: str) -> bool:
        return unquote_plus(part.split("=", 1)[0]).lower() in self.params


def _query_parts(url: httpx.URL) -> list[str]:
    return [part for part in url.query.decode("ascii", "replace").split("&") if part]


def on_origin(
    url: httpx.URL | str, origin: httpx.URL, secrets: Secrets, what: str = "the next page"
) -> httpx.URL:
    """``url`` if it has ``origin``'s scheme, host and port: a token is never sent elsewhere."""
    parsed = httpx.URL(str(url))
    if (parsed.scheme, parsed.host, parsed.port) != (origin.scheme, origin.host, origin.port):
        raise SourceError(
            f"{what} {secrets.url(parsed)} is not on {origin.scheme}://"
            f"{origin.netloc.decode()}; refusing to follow it"
        )
    return parsed


def send(
    client: httpx.Client,
    url: httpx.URL | str,
    secrets: Secrets,
    *,
    params: Mapping[str, Any] | None = None,
    method: str = "GET",
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool | None = None,
) -> httpx.Response:
    """Send ``method`` to ``url`` with ``params`` added to its query (and ``json`` as the
    body); connection failures and timeouts become :class:`SourceUnavailable`."""
    target = httpx.URL(url)
    if params:
        target = target.copy_merge_params(params)  # httpx would replace the query otherwise
    request = client.build_request(method, target, json=json, headers=headers)
    follow = client.follow_redirects if follow_redirects is None else follow_redirects
    try:
        return client.send(request, follow_redirects=follow)
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(
            f"{method} {secrets.url(request.url)}: no answer in time ({type(exc).__name__}, "
            f"timeout {_timeout(client)})"
        ) from None
    except httpx.TransportError as exc:
        raise SourceUnavailable(
            f"{method} {secrets.url(request.url)}: {type(exc).__name__}: {secrets.text(str(exc))}"
        ) from None


def _timeout(client: httpx.Client) -> str:
    read = client.timeout.read
    return f"{read:g}s" if read is not None else "none"


def what_the_server_said(response: httpx.Response, secrets: Secrets) -> str:
    """The server's message, shortened: a JSON ``message`` or ``error`` field, or the text."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        for key in ("message", "error_description", "error", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                text = body[key]
                break
    text = " ".join(text.split())
    if len(text) > _BODY_LIMIT:
        text = text[:_BODY_LIMIT] + "..."
    return secrets.text(text) or "(empty body)"


def describe(response: httpx.Response, secrets: Secrets) -> str:
    """``GET <url> answered 502 Bad Gateway: <what the server said>``, without secrets."""
    request = response.request
    return (
        f"{request.method} {secrets.url(request.url)} answered {response.status_code} "
        f"{response.reason_phrase}: {what_the_server_said(response, secrets)}"
    )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (a number, or an HTTP date), or ``None``."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - server_time(response))


def server_time(response: httpx.Response) -> float:
    """The server's clock from its ``Date`` header (this machine's if absent): reset times
    the server gives are compared with its own clock, not ours."""
    value = response.headers.get("Date")
    if value:
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()


def check(response: httpx.Response, secrets: Secrets, token_env: str | None) -> None:
    """Raise the error a non-2xx answer calls for.

    401 is :class:`TokenRefused`; 429 with ``Retry-After`` is :class:`RetryAfter`; 5xx is
    :class:`SourceUnavailable`; any other non-2xx is :class:`SourceError`.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    message = describe(response, secrets)
    if status == 401:
        held = f"the token in {token_env}" if token_env else "the request (it sent no token)"
        raise TokenRefused(f"{message}; the server refused {held}")
    if status == 429:
        wait = retry_after_seconds(response)
        if wait is not None:
            raise RetryAfter(wait, message)
    if status >= 500 or status == 429:
        raise SourceUnavailable(message)
    if 300 <= status < 400:
        location = secrets.url(response.headers.get("Location", "?"))
        raise SourceError(f"{message}; redirected to {location}: configure that URL instead")
    raise SourceError(message)


def json_body(response: httpx.Response, secrets: Secrets) -> Any:
    """The response's JSON, or a :class:`SourceError` that says what came instead."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        raise SourceError(
            f"{response.request.method} {secrets.url(response.request.url)} answered "
            f"{response.status_code} with "
            f"a body that is not JSON ({kind}): {what_the_server_said(response, secrets)}"
        ) from None


class _RedactHttpxLog(logging.Filter):
    """httpx logs each request's full URL at INFO: mask secret query parameters in it."""

    params: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            redact = Secrets(params=self.params)
            record.args = tuple(
                redact.url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


def mask_in_logs(params: Iterable[str]) -> None:
    """Mask these query parameters, besides :data:`SECRET_PARAMS`, in httpx's request log."""
    _RedactHttpxLog.params.update(p.lower() for p in params)


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _RedactHttpxLog) for f in _httpx_log.filters):
    _httpx_log.addFilter(_RedactHttpxLog())


#: Redirects followed when asking about one removal candidate, at most.
MAX_REDIRECTS = 3
#: The answers that say an item lives at another URL now (renamed, transferred, moved).
REDIRECTS = frozenset({301, 302, 307, 308})
#: One GET's answer: ``(status, response, JSON body or None)``.
Fetched = tuple[int, httpx.Response, Any]


class NotFollowed(SourceError):
    """A redirect that is not followed: to another origin, without a ``Location``, or one
    too many."""


def get_following(
    url: httpx.URL, get: Callable[[httpx.URL], Fetched], origin: httpx.URL, secrets: Secrets
) -> Fetched:
    """``get(url)``, following redirects on ``origin`` only, at most :data:`MAX_REDIRECTS`:
    the first answer that is no redirect. The target is the ``Location`` header, or the
    ``url`` of a JSON body (GitHub's API sends both). Raises :class:`NotFollowed` rather than
    send the token to another origin."""
    for _ in range(MAX_REDIRECTS + 1):
        fetched = get(url)
        status, response, body = fetched
        if status not in REDIRECTS:
            return fetched
        said = describe(response, secrets)
        location = response.headers.get("Location") or (
            body.get("url") if isinstance(body, Mapping) else None
        )
        if not isinstance(location, str) or not location:
            raise NotFollowed(f"{said}, without a Location")
        try:
            url = on_origin(response.url.join(location), origin, secrets, "the redirect to")
        except SourceError as exc:
            raise NotFollowed(f"{said}; {exc}") from None
    raise NotFollowed(f"{said}; more than {MAX_REDIRECTS} redirects in a row")


#: What asking about one removal candidate found: ``(fresh entity or None, whether the
#: candidate's ref stays)``, or ``None`` to keep the candidate unchecked this cycle.
Verdict = tuple[DeferredEntity | None, bool] | None


def check_each(
    candidates: Sequence[RemovalCandidate], check_one: Callable[[RemovalCandidate], Verdict]
) -> RemovalCheck:
    """Ask about each candidate in turn and gather the answers into a :class:`RemovalCheck`."""
    gone: list[str] = []
    present: list[DeferredEntity] = []
    for candidate in candidates:
        verdict = check_one(candidate)
        if verdict is None:
            continue
        fresh, still_here = verdict
        if fresh is not None:
            present.append(fresh)
        if not still_here:
            gone.append(candidate.ref)
    return RemovalCheck(gone=gone, present=present)
