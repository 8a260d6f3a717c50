"""GitHub's ``repository`` webhooks end to end: signed, POSTed to the admin API, applied.

A GitHub provider reads a made-up organisation (the GitHub lookalike on 127.0.0.1) in one full
cycle; then the organisation changes on "GitHub" and GitHub's webhook of the change is POSTed to
``/incremental/events/github`` the way GitHub sends it (signed with the webhook secret, with its
delivery id). Applying the events must change the catalog at once, and the next cycle must
find nothing left to change: the entities the webhooks wrote are the ones a cycle reads.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ingestion import IncrementalIngestion, Settings
from ingestion.api import create_api
from ingestion.api.events import webhook_signature
from ingestion.settings import EMBEDDED_BROKER
from ingestion.store import models as m
from providers._names import entity_name
from providers.github import GitHubProvider
from tests.support.api_server import serve
from tests.support.fake_apis import GitHubApi, expected_refs, make_repo
from tests.support.feed import catalog_content, replay
from tests.support.github_events import rest_repository, webhook

ADMIN = "admin-token-for-tests-0123456789"
SECRET = "webhook-secret-for-tests-0123456"
TOKEN = "ghp_madeUpWebhooksToken0123456789abcdef"
TOKEN_ENV = "TEST_GITHUB_WEBHOOKS_TOKEN"
PROVIDER = "acme-repos"


def ref(name: str) -> str:
    """The ref the provider gives the repository called ``name``."""
    return f"component:default/{entity_name(name)}".lower()


@dataclass
class GitHub:
    """The organisation on "GitHub", the ingestion that reads it, and its API's URL."""

    api: GitHubApi
    ingestion: IncrementalIngestion
    url: str

    def repo(self, name: str) -> dict[str, Any]:
        """A copy of the repository called ``name`` as the fake holds it now."""
        with self.api.lock:
            return copy.deepcopy(next(r for r in self.api.repos if r["name"] == name))

    def deliver(
        self,
        payload: Any,
        *,
        kind: str = "repository",
        delivery: str | None = None,
        secret: str = SECRET,
        body: bytes | None = None,
    ) -> httpx.Response:
        """POST ``payload`` as GitHub delivers a webhook to an organisation's hook."""
        content = json.dumps(payload).encode() if body is None else body
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/044aadd",
            "X-GitHub-Event": kind,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "292430182",
            "X-GitHub-Hook-Installation-Target-Type": "organization",
            "X-GitHub-Hook-Installation-Target-ID": "9919",
            "X-Hub-Signature-256": webhook_signature(secret, json.dumps(payload).encode()),
        }
        return httpx.post(
            f"{self.url}/incremental/events/github", content=content, headers=headers, timeout=30
        )

    def accepted(self, payload: Any, **kwargs: Any) -> int:
        """Deliver ``payload``, expect a 202 for a new delivery; the stored event's id."""
        answer = self.deliver(payload, **kwargs)
        assert answer.status_code == 202, answer.text
        assert answer.json()["duplicate"] is False
        return int(answer.json()["id"])

    def feed_after(self, after: int) -> list[tuple[str, str, str, int | None]]:
        return [
            (c["kind"], c["ref"], c["source"], c["event_id"])
            for c in self.ingestion.store.changes(after=after, limit=1000)
        ]

    def refs(self) -> set[str]:
        return set(self.ingestion.catalog.refs(PROVIDER))

    def events_stored(self) -> int:
        with self.ingestion.store.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(m.events)).scalar() or 0)


@pytest.fixture
def github(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHub]:
    """An organisation of 30 repositories read by one full cycle, and the API served."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    settings = Settings(
        database_url=database_url,
        broker_url=EMBEDDED_BROKER,
        broker_dir=tmp_path / "broker",
        page_timeout=5.0,
        time_limit_grace=1.0,
    )
    ingestion = IncrementalIngestion(settings=settings)
    with GitHubApi(count=30, token=TOKEN) as api:
        provider = GitHubProvider(PROVIDER, "acme", token_env=TOKEN_ENV, api_url=api.url)
        ingestion.add_provider(provider, burst_interval=0)
        ingestion.register_providers()
        reports = ingestion.run_cycle(PROVIDER)
        assert reports[-1].outcome == "done"
        assert set(ingestion.catalog.refs(PROVIDER)) == expected_refs(api)
        assert len(expected_refs(api)) == 30
        app = create_api(ingestion, admin_token=ADMIN, webhook_secret=SECRET)
        with serve(app) as url:
            yield GitHub(api, ingestion, url)
    ingestion.close()


@pytest.mark.timeout(60)
def test_repository_webhooks_change_the_catalog_at_once_and_the_next_cycle_agrees(
    github: GitHub,
) -> None:
    ingestion, api = github.ingestion, github.api

    def applied(payload: dict[str, Any]) -> tuple[int, list[tuple[str, str, str, int | None]]]:
        """Deliver and apply one webhook: its event id and the feed it wrote."""
        before = ingestion.store.last_change_id()
        event_id = github.accepted(payload)
        assert ingestion.store.event(event_id)["status"] == "pending"
        assert ingestion.apply_events("test/1") == 1
        stored = ingestion.store.event(event_id)
        assert stored["status"] == "applied"
        assert set(stored["result"]) == {PROVIDER}, stored["result"]
        # The catalog is the organisation as GitHub has it now, without waiting for a cycle
        assert github.refs() == expected_refs(api)
        return event_id, github.feed_after(before)

    # Created: the fake has it too, so the next cycle agrees
    [created] = api.insert(1)
    event_id, feed = applied(webhook("created", github.repo(created)).payload)
    assert feed == [("added", ref(created), "event", event_id)]
    entity = ingestion.catalog.get(ref(created))
    assert entity is not None and entity.provider == PROVIDER
    assert entity.entity["metadata"]["annotations"]["github.com/project-slug"] == f"acme/{created}"

    # Deleted
    deleted = github.repo("repo-0005")
    api.remove({"repo-0005"})
    event_id, feed = applied(webhook("deleted", deleted).payload)
    assert feed == [("removed", ref("repo-0005"), "event", event_id)]
    assert ingestion.catalog.get(ref("repo-0005")) is None

    # Deleted, a repository whose name is not a valid entity name as it is
    odd = make_repo(13)["name"]
    deleted = github.repo(odd)
    api.remove({odd})
    event_id, feed = applied(webhook("deleted", deleted).payload)
    assert feed == [("removed", ref(odd), "event", event_id)]

    # Renamed: the old ref goes, the new one comes
    api.rename("repo-0006", "repo-six")
    changes = {"repository": {"name": {"from": "repo-0006"}}}
    event_id, feed = applied(webhook("renamed", github.repo("repo-six"), changes=changes).payload)
    assert sorted(feed) == [
        ("added", ref("repo-six"), "event", event_id),
        ("removed", ref("repo-0006"), "event", event_id),
    ]
    renamed = ingestion.catalog.get(ref("repo-six"))
    assert renamed is not None
    assert renamed.entity["metadata"]["annotations"]["github.com/project-slug"] == "acme/repo-six"

    # Archived: the entity changes in place
    with api.lock:
        next(r for r in api.repos if r["name"] == "repo-0008")["archived"] = True
    event_id, feed = applied(webhook("archived", github.repo("repo-0008")).payload)
    assert feed == [("changed", ref("repo-0008"), "event", event_id)]
    archived = ingestion.catalog.get(ref("repo-0008"))
    assert archived is not None
    assert archived.entity["spec"]["lifecycle"] == "deprecated"
    assert "archived" in archived.entity["metadata"]["tags"]
    assert archived.entity["metadata"]["annotations"]["github.com/archived"] == "true"

    # Edited: a new description and topics
    with api.lock:
        repo = next(r for r in api.repos if r["name"] == "repo-0010")
        repo["description"] = "Now with a description"
        repo["topics"] = ["frontend", "team-9"]
    event_id, feed = applied(webhook("edited", github.repo("repo-0010")).payload)
    assert feed == [("changed", ref("repo-0010"), "event", event_id)]
    edited = ingestion.catalog.get(ref("repo-0010"))
    assert edited is not None
    assert edited.entity["metadata"]["description"] == "Now with a description"
    assert edited.entity["metadata"]["tags"] == ["frontend", "team-9"]

    # Transferred out of the organisation: the payload shows it where it is now
    api.transfer("repo-0009", "elsewhere")
    moved = github.repo("repo-0009")
    assert moved["full_name"] == "elsewhere/repo-0009"
    changes = {"owner": {"from": {"organization": {"login": "acme", "id": 9919}}}}
    event_id, feed = applied(
        webhook("transferred", moved, org="elsewhere", changes=changes).payload
    )
    assert feed == [("removed", ref("repo-0009"), "event", event_id)]
    assert ingestion.catalog.get(ref("repo-0009")) is None

    # When the next full cycle reads the organisation
    after_events = catalog_content(ingestion)
    last = ingestion.store.last_change_id()
    graphql_before = len(api.seen("/graphql"))
    reports = ingestion.run_cycle(PROVIDER)
    assert reports[-1].outcome == "done"
    assert len(api.seen("/graphql")) > graphql_before  # it read the organisation again

    # Then it finds nothing to change: the webhooks' entities are the cycle's
    assert github.feed_after(last) == []
    assert catalog_content(ingestion) == after_events
    assert github.refs() == expected_refs(api)
    assert ingestion.errors(PROVIDER) == []
    # And the feed, events and cycles together, replays to the catalog
    assert replay(ingestion) == catalog_content(ingestion)


@pytest.mark.timeout(60)
def test_a_redelivered_webhook_answers_202_as_a_duplicate_and_changes_nothing(
    github: GitHub,
) -> None:
    ingestion, api = github.ingestion, github.api
    [created] = api.insert(1)
    delivery = str(uuid.uuid4())
    payload = webhook("created", github.repo(created)).payload
    first = github.accepted(payload, delivery=delivery)
    assert ingestion.apply_events("test/1") == 1
    assert ref(created) in github.refs()

    # The repository is deleted since, then GitHub redelivers the "created" webhook
    deleted = github.repo(created)
    api.remove({created})
    github.accepted(webhook("deleted", deleted).payload)
    assert ingestion.apply_events("test/1") == 1
    assert ref(created) not in github.refs()
    before, content = ingestion.store.last_change_id(), catalog_content(ingestion)
    stored = github.events_stored()

    again = github.deliver(payload, delivery=delivery)

    assert again.status_code == 202, again.text
    assert again.json() == {
        "id": first,
        "duplicate": True,
        "message": "delivered before; applied once",
    }
    assert github.events_stored() == stored
    assert ingestion.apply_events("test/1") == 0
    assert github.feed_after(before) == []
    assert catalog_content(ingestion) == content
    assert github.refs() == expected_refs(api)


def push_payload(repo: dict[str, Any]) -> dict[str, Any]:
    """A ``push`` webhook of ``repo`` as GitHub delivers it to an organisation's hook."""
    owner = repo["full_name"].split("/")[0]
    return {
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.example/{repo['full_name']}/compare/6113728f27ae...0d1a26e67d8f",
        "commits": [
            {
                "id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
                "message": "Update README.md",
                "timestamp": "2024-05-01T11:59:00Z",
                "author": {"name": "Octo Cat", "email": "octocat@github.example"},
                "added": [],
                "removed": [],
                "modified": ["README.md"],
            }
        ],
        "head_commit": None,
        "repository": rest_repository(repo),
        "pusher": {"name": "octocat", "email": "octocat@github.example"},
        "organization": {"login": owner, "id": 9919},
        "sender": {"login": "octocat", "id": 1, "type": "User", "site_admin": False},
    }


@pytest.mark.timeout(60)
def test_webhooks_of_another_organisation_or_another_kind_are_applied_and_change_nothing(
    github: GitHub,
) -> None:
    ingestion = github.ingestion
    before, content = ingestion.store.last_change_id(), catalog_content(ingestion)

    # A repository of another organisation deleted, with a name the catalog also holds
    theirs = make_repo(1, org="other")
    other_org = github.accepted(webhook("deleted", theirs, org="other").payload)
    # A repository of another organisation created
    new_there = github.accepted(webhook("created", make_repo(77, org="other"), org="other").payload)
    # A push to one of ours: not a repository webhook
    push = github.accepted(push_payload(github.repo("repo-0001")), kind="push")

    assert ingestion.apply_events("test/1") == 3
    for event_id in (other_org, new_there, push):
        stored = ingestion.store.event(event_id)
        assert stored is not None and stored["topic"] == "github"
        assert stored["status"] == "applied"
        assert stored["result"] == {}, (event_id, stored["result"])  # no provider took it
    assert ingestion.store.event(push)["headers"]["x-github-event"] == "push"
    assert github.feed_after(before) == []
    assert catalog_content(ingestion) == content
    assert ref("repo-0001") in github.refs()


@pytest.mark.timeout(60)
def test_a_badly_signed_webhook_is_refused_and_nothing_is_stored(github: GitHub) -> None:
    ingestion = github.ingestion
    before, content = ingestion.store.last_change_id(), catalog_content(ingestion)
    payload = webhook("deleted", github.repo("repo-0002")).payload

    forged = github.deliver(payload, secret="not-the-secret-at-all-0123456789")
    assert forged.status_code == 401, forged.text
    assert "does not match" in forged.json()["error"]
    assert SECRET not in forged.text
    # Signed right, but another body than the one signed
    tampered = github.deliver(
        payload, body=json.dumps(webhook("deleted", github.repo("repo-0004")).payload).encode()
    )
    assert tampered.status_code == 401, tampered.text

    assert github.events_stored() == 0
    assert ingestion.store.pending_events() == []
    assert ingestion.apply_events("test/1") == 0
    assert github.feed_after(before) == []
    assert catalog_content(ingestion) == content
    assert ref("repo-0002") in github.refs()
