"""The repositories of a GitHub organisation as ``Component`` entities.

Pages of 100 repositories, sorted by name, following the ``Link`` header. A rate limit
(403 or 429 with ``Retry-After``, or ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset``)
stops the burst and the provider waits until the limit resets, without spending a backoff
step. The token is read from the environment when a burst begins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from ingestion.entities import valid_namespace
from ingestion.errors import ProviderConfigError, RetryAfter
from ingestion.provider import (
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    Rejection,
)
from providers._http import (
    Secrets,
    SourceError,
    check,
    describe,
    json_body,
    on_origin,
    read_token,
    retry_after_seconds,
    send,
    server_time,
)
from providers._names import entity_name, valid_tag

__all__ = ["GitHubProvider", "repository_entity"]

SLUG_ANNOTATION = "github.com/project-slug"
#: GitHub resets its primary limit within the hour; a reset further away is not believed.
MAX_WAIT = 3600.0 + 60.0
#: GitHub's advice when a secondary rate limit gives no time to wait.
SECONDARY_WAIT = 60.0

Cursor = dict[str, str]


@dataclass
class GitHubSession:
    """One burst's client, secrets, and the rate limit the last answer announced."""

    client: httpx.Client
    secrets: Secrets
    exhausted_until: float | None = None  # this machine's time at which the limit resets
    exhausted_reason: str = ""


def repository_entity(
    repo: Mapping[str, Any],
    *,
    owner: str,
    component_type: str = "service",
    lifecycle: str = "production",
    namespace: str | None = None,
) -> dict[str, Any]:
    """The ``Component`` entity of one repository as GitHub's REST API returns it."""
    raw_name = str(repo["name"])
    name = entity_name(raw_name)
    archived = bool(repo.get("archived"))
    tags = [t.lower() for t in repo.get("topics") or [] if isinstance(t, str)]
    if archived:
        tags.append("archived")
    metadata: dict[str, Any] = {
        "name": name,
        "annotations": {SLUG_ANNOTATION: str(repo["full_name"])},
        "tags": list(dict.fromkeys(t for t in tags if valid_tag(t))),
    }
    if name != raw_name:
        metadata["title"] = raw_name
    if repo.get("description"):
        metadata["description"] = str(repo["description"])
    if repo.get("html_url"):
        metadata["annotations"]["backstage.io/source-location"] = f"url:{repo['html_url']}"
        metadata["links"] = [{"url": str(repo["html_url"]), "title": "Repository"}]
    if archived:
        metadata["annotations"]["github.com/archived"] = "true"
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": metadata,
        "spec": {
            "type": component_type,
            "lifecycle": "deprecated" if archived else lifecycle,
            "owner": owner,
        },
    }


class GitHubProvider(IncrementalEntityProvider[Cursor, GitHubSession]):
    """The repositories of ``organization``; the cursor is the URL of the next page."""

    def __init__(
        self,
        name: str,
        organization: str,
        *,
        token_env: str = "GITHUB_TOKEN",
        api_url: str = "https://api.github.com",
        per_page: int = 100,
        include_archived: bool = True,
        owner: str | None = None,
        component_type: str = "service",
        lifecycle: str = "production",
        namespace: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not 1 <= per_page <= 100:
            raise ProviderConfigError(f"provider {name!r}: per_page must be 1 to 100")
        if namespace is not None and not valid_namespace(namespace):
            raise ProviderConfigError(
                f"provider {name!r}: namespace {namespace!r} must be a DNS label "
                "(lower case letters, digits and '-')"
            )
        self.name = name
        self.organization = organization
        self.token_env = token_env
        self.api = httpx.URL(api_url.rstrip("/") + "/")
        self.per_page = per_page
        self.include_archived = include_archived
        self.owner = owner or organization
        self.component_type = component_type
        self.lifecycle = lifecycle
        self.namespace = namespace
        self.timeout = timeout

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[GitHubSession], Any]) -> None:
        token = read_token(self.token_env, f"provider {self.name!r}")
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "celery-incremental-ingestion",
        }
        # httpx drops the Authorization header on a redirect to another origin.
        with httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.timeout), follow_redirects=True
        ) as client:
            burst(GitHubSession(client, Secrets([token])))

    def next(
        self, context: GitHubSession, cursor: Cursor | None = None
    ) -> EntityIteratorResult[Cursor]:
        if context.exhausted_until is not None:
            # The last answer spent the limit: the next request would only be refused.
            wait = max(1.0, context.exhausted_until - time.time())
            raise RetryAfter(wait, context.exhausted_reason)
        if cursor is None:
            url = self.api.join(f"orgs/{self.organization}/repos").copy_merge_params(
                {"per_page": self.per_page, "type": "all", "sort": "full_name", "direction": "asc"}
            )
        else:
            url = on_origin(cursor["url"], self.api, context.secrets)
        response = send(context.client, url, context.secrets)
        self._check(response, context)
        repos = json_body(response, context.secrets)
        if not isinstance(repos, list):
            raise SourceError(
                f"GET {context.secrets.url(response.request.url)}: expected a list of "
                f"repositories, got {type(repos).__name__}"
            )
        entities: list[DeferredEntity] = []
        rejections: list[Rejection] = []
        for position, repo in enumerate(repos):
            if not isinstance(repo, Mapping) or "name" not in repo or "full_name" not in repo:
                rejections.append(
                    Rejection(f"repository #{position}", "not a repository object", "repository")
                )
                continue
            if repo.get("archived") and not self.include_archived:
                continue
            entity = repository_entity(
                repo,
                owner=self.owner,
                component_type=self.component_type,
                lifecycle=self.lifecycle,
                namespace=self.namespace,
            )
            entities.append(DeferredEntity(entity, f"url:{repo.get('html_url', '')}"))
        link = response.links.get("next", {}).get("url")
        following = None
        if link:
            following = {"url": str(on_origin(response.url.join(link), self.api, context.secrets))}
        return EntityIteratorResult(
            done=following is None, entities=entities, cursor=following, rejections=rejections
        )

    def _check(self, response: httpx.Response, context: GitHubSession) -> None:
        status = response.status_code
        headers = response.headers
        if status in (403, 429):
            wait = retry_after_seconds(response)
            if wait is not None:
                raise RetryAfter(min(wait, MAX_WAIT), self._reason(response, context))
            if headers.get("X-RateLimit-Remaining") == "0" and "X-RateLimit-Reset" in headers:
                reset = self._reset(response)
                raise RetryAfter(self._wait(reset, response), self._reason(response, context))
            if "rate limit" in response.text.lower():
                raise RetryAfter(SECONDARY_WAIT, self._reason(response, context))
        check(response, context.secrets, self.token_env)
        if headers.get("X-RateLimit-Remaining") == "0" and "X-RateLimit-Reset" in headers:
            # The page arrived, but it was the last request the limit allowed.
            reset = self._reset(response)
            context.exhausted_until = time.time() + self._wait(reset, response)
            context.exhausted_reason = (
                f"GitHub rate limit spent; it resets at {_iso(reset)} (X-RateLimit-Reset)"
            )

    def _reason(self, response: httpx.Response, context: GitHubSession) -> str:
        reason = f"GitHub rate limit: {describe(response, context.secrets)}"
        if "X-RateLimit-Reset" in response.headers:
            reason += f"; it resets at {_iso(self._reset(response))}"
        return reason

    @staticmethod
    def _reset(response: httpx.Response) -> float:
        try:
            return float(response.headers["X-RateLimit-Reset"])
        except ValueError:
            return server_time(response) + SECONDARY_WAIT

    def _wait(self, reset: float, response: httpx.Response) -> float:
        # The server's own clock: a worker whose clock is off still waits the right time.
        return min(MAX_WAIT, max(1.0, reset - server_time(response) + 1.0))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
