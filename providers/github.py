"""The repositories of a GitHub organisation as ``Component`` entities.

Pages come from GitHub's GraphQL API: ``organization(login:) { repositories(first:, after:,
orderBy: {field: CREATED_AT, direction: ASC}) }``, with the connection's ``endCursor`` as the
engine's cursor. A connection cursor holds the position of the last repository read, not a
page number, so a repository deleted, renamed or transferred while a cycle runs cannot make
another one slip between two pages; repositories created meanwhile come last.

Before the sweep, :meth:`GitHubProvider.check_removals` asks GitHub about each repository the
cycle did not see (``GET /repos/{owner}/{repo}``): a 404 is gone; a 301 is a rename or a
transfer, followed to where the repository is now (present under its new name if it is still in
the organisation, gone from it otherwise); a 200 is present. Nothing GitHub still lists in the
organisation is removed.

Between cycles, :meth:`GitHubProvider.on_event` maps GitHub's ``repository`` webhooks (delivered
with the topic ``github``) to the same entities a cycle makes, so the catalog follows a
repository created, edited, archived, renamed, transferred or deleted without waiting for the
next cycle.

A rate limit (403 or 429 with ``Retry-After``, ``X-RateLimit-Remaining: 0`` and
``X-RateLimit-Reset``, or GraphQL's ``RATE_LIMITED``) stops the burst and the provider waits
until the limit resets, without spending a backoff step; in the checking phase as well, where
the batch being checked is asked about again after the reset. Refusals that retrying cannot fix (bad
credentials, an organisation that does not exist or is hidden from the token) raise
:class:`~ingestion.errors.SourceRefused`, which parks the provider. Every failed request is
logged with GitHub's ``X-GitHub-Request-Id``. The token is read from the environment when a
burst begins and is never logged or stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from ingestion.entities import entity_ref, valid_namespace
from ingestion.errors import EventRejected, ProviderConfigError, RetryAfter, SourceRefused
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
    NotFollowed,
    Secrets,
    SourceError,
    TokenRefused,
    Verdict,
    check,
    check_each,
    describe,
    get_following,
    json_body,
    read_token,
    retry_after_seconds,
    send,
    server_time,
)
from providers._names import entity_name, valid_tag

__all__ = ["GitHubProvider", "graphql_url", "repository_entity"]

log = logging.getLogger("providers.github")

SLUG_ANNOTATION = "github.com/project-slug"
#: GitHub resets its primary limit within the hour; a reset further away is not believed.
MAX_WAIT = 3600.0 + 60.0
#: GitHub's advice when a secondary rate limit gives no time to wait.
SECONDARY_WAIT = 60.0
#: Topics read per repository (GitHub allows 20).
MAX_TOPICS = 20

REPOSITORIES_QUERY = """
query($login: String!, $first: Int!, $after: String) {
  organization(login: $login) {
    repositories(first: $first, after: $after, orderBy: {field: CREATED_AT, direction: ASC}) {
      pageInfo { endCursor hasNextPage }
      nodes {
        databaseId
        name
        nameWithOwner
        description
        url
        isArchived
        repositoryTopics(first: MAX_TOPICS) { nodes { topic { name } } }
      }
    }
  }
}
""".replace("MAX_TOPICS", str(MAX_TOPICS))

HIDDEN_CAUSES = (
    "it does not exist (check the spelling of the login), or it is hidden from the token: a "
    "classic token needs the read:org scope to see an organisation's private membership, an "
    "organisation with SAML single sign-on must have authorised the token (Configure SSO on "
    "the token's page), and a fine-grained token must be granted access to the organisation"
)

Cursor = dict[str, str]


@dataclass
class GitHubSession:
    """One burst's client, secrets, the rate limit the last answer announced, and the
    ``ETag``s of the REST answers read in this burst."""

    client: httpx.Client
    secrets: Secrets
    exhausted_until: float | None = None  # this machine's time at which the limit resets
    exhausted_reason: str = ""
    etags: dict[str, tuple[str, Any]] = field(default_factory=dict)  # URL -> (ETag, body)


def graphql_url(api_url: str) -> str:
    """GitHub's GraphQL endpoint for a REST ``api_url``: ``https://api.github.com/graphql``,
    or ``https://host/api/graphql`` for GitHub Enterprise Server's ``https://host/api/v3``."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base.removesuffix("/v3") + "/graphql"
    return base + "/graphql"


def request_id(response: httpx.Response) -> str:
    """`` (X-GitHub-Request-Id: ...)`` for a message, or nothing if GitHub sent none."""
    value = response.headers.get("X-GitHub-Request-Id")
    return f" (X-GitHub-Request-Id: {value})" if value else ""


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
    """The repositories of ``organization``; the cursor is the GraphQL connection's
    ``endCursor`` (``{"after": "..."}``)."""

    def __init__(
        self,
        name: str,
        organization: str,
        *,
        token_env: str = "GITHUB_TOKEN",
        api_url: str = "https://api.github.com",
        graphql_url: str | None = None,
        per_page: int = 100,
        include_archived: bool = True,
        owner: str | None = None,
        component_type: str = "service",
        lifecycle: str = "production",
        namespace: str | None = None,
        timeout: float = 30.0,
        event_topic: str = "github",
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
        self.graphql = httpx.URL(graphql_url or default_graphql_url(api_url))
        self.per_page = per_page
        self.include_archived = include_archived
        self.owner = owner or organization
        self.component_type = component_type
        self.lifecycle = lifecycle
        self.namespace = namespace
        self.timeout = timeout
        self.event_topic = event_topic

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
        # Redirects are followed by hand (removal checks), and only on the API's origin.
        with httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.timeout), follow_redirects=False
        ) as client:
            burst(GitHubSession(client, Secrets([token])))

    # -- pages ----------------------------------------------------------------------------

    def next(
        self, context: GitHubSession, cursor: Cursor | None = None
    ) -> EntityIteratorResult[Cursor]:
        self._wait_if_spent(context)
        variables = {
            "login": self.organization,
            "first": self.per_page,
            "after": cursor["after"] if cursor else None,
        }
        response = send(
            context.client,
            self.graphql,
            context.secrets,
            method="POST",
            json={"query": REPOSITORIES_QUERY, "variables": variables},
        )
        self._check(response, context, organization=True)
        try:
            body = json_body(response, context.secrets)
        except SourceError as exc:
            # A 2xx that is not JSON (a proxy's HTML page, a truncated body) failed too.
            raise self._failure(str(exc), response) from None
        connection = self._connection(response, body, context)
        entities: list[DeferredEntity] = []
        rejections: list[Rejection] = []
        for position, node in enumerate(connection.get("nodes") or []):
            repo = _repository(node)
            if repo is None:
                rejections.append(
                    Rejection(f"repository #{position}", "not a repository object", "repository")
                )
                continue
            if repo["archived"] and not self.include_archived:
                continue
            entities.append(self._deferred(repo))
        info = connection.get("pageInfo")
        more = isinstance(info, Mapping) and info.get("hasNextPage") is True
        following = None
        if more:
            end = info.get("endCursor") if isinstance(info, Mapping) else None
            if not isinstance(end, str) or not end:
                raise SourceError(
                    f"POST {context.secrets.url(self.graphql)}: hasNextPage is true but there "
                    f"is no endCursor{request_id(response)}"
                )
            if cursor is not None and end == cursor.get("after"):
                raise SourceError(
                    f"POST {context.secrets.url(self.graphql)}: the next page is this page "
                    f"again (endCursor {end!r}); stopping{request_id(response)}"
                )
            following = {"after": end}
        return EntityIteratorResult(
            done=following is None, entities=entities, cursor=following, rejections=rejections
        )

    def _connection(
        self, response: httpx.Response, body: Any, context: GitHubSession
    ) -> Mapping[str, Any]:
        where = f"POST {context.secrets.url(response.request.url)}"
        errors = body.get("errors") if isinstance(body, Mapping) else None
        if errors:
            self._graphql_errors(response, errors, context)
        data = body.get("data") if isinstance(body, Mapping) else None
        organization = data.get("organization") if isinstance(data, Mapping) else None
        if organization is None and isinstance(data, Mapping) and "organization" in data:
            raise self._refused(response, f"{where}: GitHub found no such organisation")
        connection = organization.get("repositories") if isinstance(organization, Mapping) else None
        if not isinstance(connection, Mapping):
            raise self._failure(
                f"{where}: expected data.organization.repositories in the answer, got "
                f"{context.secrets.text(str(body))[:300]}",
                response,
            )
        return connection

    def _graphql_errors(
        self, response: httpx.Response, errors: Any, context: GitHubSession
    ) -> None:
        listed = [e for e in errors if isinstance(e, Mapping)] if isinstance(errors, list) else []
        kinds = {str(e.get("type", "")) for e in listed}
        said = "; ".join(str(e.get("message", "")) for e in listed) or str(errors)
        said = context.secrets.text(said)[:500]
        where = f"POST {context.secrets.url(response.request.url)}"
        if "RATE_LIMITED" in kinds:
            reason = f"GitHub rate limit: {where}: {said}"
            if "X-RateLimit-Reset" in response.headers:
                reset = self._reset(response)
                reason += f"; it resets at {_iso(reset)}{request_id(response)}"
                self._log_failure(reason)
                raise RetryAfter(self._wait(reset, response), reason)
            reason += request_id(response)
            self._log_failure(reason)
            raise RetryAfter(SECONDARY_WAIT, reason)
        if kinds & {"NOT_FOUND", "FORBIDDEN"}:
            raise self._refused(response, f"{where}: GitHub answered: {said}")
        raise self._failure(f"{where} answered with errors: {said}", response)

    def _refused(self, response: httpx.Response, said: str) -> SourceRefused:
        """The organisation cannot be read: what GitHub ``said``, the likely causes, GitHub's
        single sign-on link when it sent one, and its request id; logged."""
        sso = response.headers.get("X-GitHub-SSO")
        hint = f"; GitHub asks for single sign-on: {sso}" if sso else ""
        message = (
            f"{said}. The organisation {self.organization!r} cannot be read with the token in "
            f"{self.token_env}: {HIDDEN_CAUSES}{hint}{request_id(response)}. Start the provider "
            "again once that is fixed"
        )
        self._log_failure(message)
        return SourceRefused(message)

    def _deferred(self, repo: Mapping[str, Any]) -> DeferredEntity:
        entity = repository_entity(
            repo,
            owner=self.owner,
            component_type=self.component_type,
            lifecycle=self.lifecycle,
            namespace=self.namespace,
        )
        return DeferredEntity(entity, f"url:{repo.get('html_url', '')}")

    def _ref(self, name: str) -> str:
        """The ref of the repository called ``name`` (its entity's name may differ)."""
        return entity_ref("Component", self.namespace, entity_name(name))

    # -- events ---------------------------------------------------------------------------

    def on_event(self, event: Event) -> EventDelta | None:
        """A ``repository`` webhook of this organisation as a delta; ``None`` for any other
        topic, any other kind of webhook, and repositories of other owners.

        ``created``, ``edited``, ``archived``, ``unarchived``, ``publicized`` and
        ``privatized`` add the repository's entity (or remove it: an archived repository when
        archived ones are left out); ``deleted`` removes it; ``renamed`` removes the old name's
        ref and adds the new entity; ``transferred`` adds a repository moved into the
        organisation and removes one moved out of it. Any other action changes nothing (an
        empty delta). The entity is the one a cycle makes of the repository, built by the same
        code from the webhook's REST-shaped ``repository``. A payload without a field the
        delta needs raises :class:`~ingestion.errors.EventRejected` naming the field.
        """
        if event.topic != self.event_topic:
            return None
        kind = event.headers.get("x-github-event", "").strip().lower()
        if kind != "repository":
            return None
        payload = event.payload
        if not isinstance(payload, Mapping):
            raise EventRejected(
                f"repository event: the payload must be a JSON object, got {_kind(payload)}"
            )
        action = _required(payload, "action", str)
        repo = _required(payload, "repository", Mapping)
        ours = _owner(payload, repo).lower() == self.organization.lower()
        if action == "transferred":
            return self._transferred(payload, ours)
        if not ours:
            return None
        if action == "deleted":
            return EventDelta(removed=[self._ref(_required(payload, "repository.name", str))])
        if action == "renamed":
            old = self._ref(_required(payload, "changes.repository.name.from", str))
            delta = self._upsert(payload)
            removed = [old, *delta.removed]
            added_refs = {_entity_ref(d.entity) for d in delta.added}
            return EventDelta(
                added=delta.added,
                removed=[r for r in dict.fromkeys(removed) if r not in added_refs],
            )
        if action in UPSERT_ACTIONS:
            return self._upsert(payload)
        return EventDelta()

    def _upsert(self, payload: Mapping[str, Any]) -> EventDelta:
        """The repository's entity, or its removal when archived ones are left out."""
        repo = _event_repository(payload)
        if repo["archived"] and not self.include_archived:
            return EventDelta(removed=[self._ref(repo["name"])])
        return EventDelta(added=[self._deferred(repo)])

    def _transferred(self, payload: Mapping[str, Any], ours: bool) -> EventDelta | None:
        if ours:
            return self._upsert(payload)
        came_from = _required(payload, "changes.owner.from", Mapping)
        before = came_from.get("organization") or came_from.get("user")
        login = before.get("login") if isinstance(before, Mapping) else None
        if not isinstance(login, str):
            raise EventRejected(
                "repository event (transferred): the payload has no "
                "changes.owner.from.organization.login nor changes.owner.from.user.login"
            )
        if login.lower() != self.organization.lower():
            return None
        # Moved out under its name in the payload; a transfer that also renamed it leaves the
        # old ref to the next cycle's removal checks.
        return EventDelta(removed=[self._ref(_required(payload, "repository.name", str))])

    # -- removal checks -------------------------------------------------------------------

    def check_removals(
        self, context: GitHubSession, candidates: Sequence[RemovalCandidate]
    ) -> RemovalCheck:
        """Ask GitHub about each repository the cycle did not see.

        A 404 is gone. A 301 (renamed or transferred) is followed to where the repository is
        now: present under its new name if it is still in the organisation (its old ref is
        gone), gone from the organisation otherwise. A 200 is present (an archived repository
        is gone when archived ones are left out). Anything else keeps the candidate for this
        cycle and is logged with GitHub's request id.

        A rate limit raises ``RetryAfter``: the burst stops with the batches already answered
        committed, and the checking phase resumes with this batch once the limit resets, so no
        candidate waits a whole cycle because GitHub asked to wait.
        """

        def check_one(candidate: RemovalCandidate) -> Verdict:
            # A limit spent by the last answer: the next request would only be refused.
            self._wait_if_spent(context)
            return self._check_one(context, candidate)

        return check_each(candidates, check_one)

    def _check_one(
        self, context: GitHubSession, candidate: RemovalCandidate
    ) -> tuple[DeferredEntity | None, bool] | None:
        """``(fresh entity or None, whether the candidate's ref stays)``, or ``None`` to keep
        the candidate unchecked."""
        annotations = candidate.entity.get("metadata", {}).get("annotations") or {}
        slug = annotations.get(SLUG_ANNOTATION) if isinstance(annotations, Mapping) else None
        if not isinstance(slug, str) or slug.count("/") != 1:
            log.warning(
                "provider %s: kept %s: it has no %s annotation to ask GitHub about",
                self.name,
                candidate.ref,
                SLUG_ANNOTATION,
            )
            return None
        try:
            status, response, body = get_following(
                self.api.join(f"repos/{slug}"),
                lambda url: self._get(context, url),
                self.api,
                context.secrets,
            )
        except NotFollowed as exc:
            self._keep(candidate, str(exc))
            return None
        if status == 404:
            log.info("provider %s: %s is gone from GitHub (404)", self.name, slug)
            return (None, False)
        if status != 200 or not isinstance(body, Mapping) or "full_name" not in body:
            self._keep(candidate, describe(response, context.secrets) + request_id(response))
            return None
        return self._verdict(candidate, body)

    def _verdict(
        self, candidate: RemovalCandidate, repo: Mapping[str, Any]
    ) -> tuple[DeferredEntity | None, bool]:
        owner = str(repo["full_name"]).split("/")[0]
        if owner.lower() != self.organization.lower():
            log.info(
                "provider %s: %s moved out of %s to %s",
                self.name,
                candidate.ref,
                self.organization,
                repo["full_name"],
            )
            return (None, False)
        if repo.get("archived") and not self.include_archived:
            return (None, False)
        fresh = self._deferred(repo)
        metadata = fresh.entity["metadata"]
        ref = entity_ref("Component", metadata.get("namespace"), metadata["name"])
        return (fresh, ref == candidate.ref)

    def _get(self, context: GitHubSession, url: httpx.URL) -> Fetched:
        """GET a REST resource: ``(status, response, JSON body)``. Conditional when this burst
        holds the resource's ``ETag``: an unchanged answer (304) costs no rate limit and gives
        status 200 with the body read before. Rate limits raise ``RetryAfter``; a 401 raises
        ``TokenRefused``."""
        key = str(url)
        known = context.etags.get(key)
        headers = {"If-None-Match": known[0]} if known else None
        response = send(context.client, url, context.secrets, headers=headers)
        if response.status_code == 304 and known is not None:
            return 200, response, known[1]
        self._rate_limit(response, context)
        if response.status_code == 401:
            self._check(response, context, organization=False)
        self._note_rate(response, context)
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = None
        etag = response.headers.get("ETag")
        if response.status_code == 200 and etag:
            context.etags[key] = (etag, body)
        if response.status_code >= 400 and response.status_code != 404:
            self._log_failure(describe(response, context.secrets) + request_id(response))
        return response.status_code, response, body

    def _keep(self, candidate: RemovalCandidate, why: str) -> None:
        log.warning("provider %s: kept %s for this cycle: %s", self.name, candidate.ref, why)

    # -- answers --------------------------------------------------------------------------

    def _wait_if_spent(self, context: GitHubSession) -> None:
        if context.exhausted_until is not None:
            # The last answer spent the limit: the next request would only be refused.
            wait = max(1.0, context.exhausted_until - time.time())
            raise RetryAfter(wait, context.exhausted_reason)

    def _check(self, response: httpx.Response, context: GitHubSession, organization: bool) -> None:
        status = response.status_code
        self._rate_limit(response, context)
        if not 200 <= status < 300:
            if organization and status in (403, 404):
                raise self._refused(response, describe(response, context.secrets))
            message = describe(response, context.secrets) + request_id(response)
            self._log_failure(message)
            if status == 401:
                raise TokenRefused(
                    f"{message}; the server refused the token in {self.token_env}: it is "
                    "wrong, expired or revoked. Start the provider again once it is replaced"
                )
            try:
                check(response, context.secrets, self.token_env)
            except SourceError as exc:
                raise type(exc)(f"{exc}{request_id(response)}") from None
        self._note_rate(response, context)

    def _rate_limit(self, response: httpx.Response, context: GitHubSession) -> None:
        """Raise ``RetryAfter`` if ``response`` is a rate limit (403 or 429 with
        ``Retry-After``, or a spent ``X-RateLimit-Remaining``, or a secondary limit)."""
        headers = response.headers
        if response.status_code not in (403, 429):
            return
        wait = retry_after_seconds(response)
        if wait is not None:
            raise RetryAfter(min(wait, MAX_WAIT), self._reason(response, context))
        if headers.get("X-RateLimit-Remaining") == "0" and "X-RateLimit-Reset" in headers:
            reset = self._reset(response)
            raise RetryAfter(self._wait(reset, response), self._reason(response, context))
        if "rate limit" in response.text.lower():
            raise RetryAfter(SECONDARY_WAIT, self._reason(response, context))

    def _note_rate(self, response: httpx.Response, context: GitHubSession) -> None:
        headers = response.headers
        if headers.get("X-RateLimit-Remaining") == "0" and "X-RateLimit-Reset" in headers:
            # The answer arrived, but it was the last request the limit allowed.
            reset = self._reset(response)
            context.exhausted_until = time.time() + self._wait(reset, response)
            context.exhausted_reason = (
                f"GitHub rate limit spent; it resets at {_iso(reset)} (X-RateLimit-Reset)"
            )

    def _reason(self, response: httpx.Response, context: GitHubSession) -> str:
        reason = f"GitHub rate limit: {describe(response, context.secrets)}"
        if "X-RateLimit-Reset" in response.headers:
            reason += f"; it resets at {_iso(self._reset(response))}"
        reason += request_id(response)
        self._log_failure(reason)
        return reason

    def _log_failure(self, message: str) -> None:
        log.warning("provider %s: %s", self.name, message)

    def _failure(self, message: str, response: httpx.Response) -> SourceError:
        """A failed request's error, with GitHub's request id; logged."""
        message += request_id(response)
        self._log_failure(message)
        return SourceError(message)

    @staticmethod
    def _reset(response: httpx.Response) -> float:
        try:
            return float(response.headers["X-RateLimit-Reset"])
        except ValueError:
            return server_time(response) + SECONDARY_WAIT

    def _wait(self, reset: float, response: httpx.Response) -> float:
        # The server's own clock: a worker whose clock is off still waits the right time.
        return min(MAX_WAIT, max(1.0, reset - server_time(response) + 1.0))


default_graphql_url = graphql_url

#: ``repository`` webhook actions that leave the repository in place, changed.
UPSERT_ACTIONS = frozenset(
    {"created", "edited", "archived", "unarchived", "publicized", "privatized"}
)


def _shape(
    *,
    id: Any,
    name: str,
    full_name: str,
    description: Any,
    html_url: Any,
    archived: bool,
    topics: Sequence[str],
) -> dict[str, Any]:
    """A repository in the one shape :func:`repository_entity` reads, whichever API it came
    from: GraphQL's pages and REST's webhooks give the same entity for the same repository."""
    return {
        "id": id,
        "name": name,
        "full_name": full_name,
        "description": description,
        "html_url": html_url,
        "archived": archived,
        "topics": list(topics[:MAX_TOPICS]),  # what the GraphQL query reads
    }


def _repository(node: Any) -> dict[str, Any] | None:
    """A GraphQL repository node in the shape of the REST API's repository, or ``None``."""
    if not isinstance(node, Mapping):
        return None
    name, full_name = node.get("name"), node.get("nameWithOwner")
    if not isinstance(name, str) or not isinstance(full_name, str):
        return None
    topics_node = node.get("repositoryTopics")
    topics: list[str] = []
    if isinstance(topics_node, Mapping):
        for item in topics_node.get("nodes") or []:
            topic = item.get("topic") if isinstance(item, Mapping) else None
            if isinstance(topic, Mapping) and isinstance(topic.get("name"), str):
                topics.append(topic["name"])
    return _shape(
        id=node.get("databaseId"),
        name=name,
        full_name=full_name,
        description=node.get("description"),
        html_url=node.get("url"),
        archived=bool(node.get("isArchived")),
        topics=topics,
    )


def _event_repository(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook's ``repository`` (REST's shape) in the shape of :func:`_shape`.

    Every field the entity reads must be there (``description`` may be null): an entity
    made without one would differ from the next cycle's, and the catalog would flap.
    """
    topics = _required(payload, "repository.topics", list)
    if not all(isinstance(topic, str) for topic in topics):
        raise EventRejected(
            f"{_where(payload)}: repository.topics must be a list of strings, got {topics!r}"
        )
    if "description" not in payload["repository"]:
        raise EventRejected(f"{_where(payload)}: the payload has no repository.description")
    description = payload["repository"]["description"]
    if description is not None and not isinstance(description, str):
        raise EventRejected(
            f"{_where(payload)}: repository.description must be a string or null, "
            f"got {_kind(description)}"
        )
    return _shape(
        id=payload["repository"].get("id"),
        name=_required(payload, "repository.name", str),
        full_name=_required(payload, "repository.full_name", str),
        description=description,
        html_url=_required(payload, "repository.html_url", str),
        archived=_required(payload, "repository.archived", bool),
        topics=topics,
    )


def _owner(payload: Mapping[str, Any], repo: Mapping[str, Any]) -> str:
    """Who owns the repository now: ``repository.owner.login``, else the owner part of
    ``repository.full_name``, else ``organization.login``."""
    owner = repo.get("owner")
    login = owner.get("login") if isinstance(owner, Mapping) else None
    if isinstance(login, str) and login:
        return login
    full_name = repo.get("full_name")
    if isinstance(full_name, str) and "/" in full_name:
        return full_name.split("/")[0]
    organization = payload.get("organization")
    login = organization.get("login") if isinstance(organization, Mapping) else None
    if isinstance(login, str) and login:
        return login
    raise EventRejected(
        f"{_where(payload)}: the payload has no repository.owner.login (nor "
        "repository.full_name, nor organization.login) to say whose repository it is"
    )


def _required(payload: Mapping[str, Any], path: str, kind: type[Any]) -> Any:
    """The value at the dotted ``path`` of the payload, of type ``kind``; else
    :class:`~ingestion.errors.EventRejected` naming the path."""
    value: Any = payload
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise EventRejected(f"{_where(payload)}: the payload has no {path}")
        value = value[key]
    wrong_bool = kind is not bool and isinstance(value, bool)
    if not isinstance(value, kind) or wrong_bool or (kind is str and not value):
        expected = {str: "a non-empty string", bool: "true or false", list: "a list"}.get(
            kind, "an object"
        )
        raise EventRejected(f"{_where(payload)}: {path} must be {expected}, got {_kind(value)}")
    return value


def _where(payload: Mapping[str, Any]) -> str:
    action = payload.get("action")
    return f"repository event ({action})" if isinstance(action, str) else "repository event"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "an empty string" if not value else f"the string {value[:60]!r}"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list"}.get(
        type(value), "an object" if isinstance(value, Mapping) else type(value).__name__
    )


def _entity_ref(entity: Mapping[str, Any]) -> str:
    metadata = entity["metadata"]
    return entity_ref(str(entity["kind"]), metadata.get("namespace"), str(metadata["name"]))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
