"""Providers' ``on_event``: GitHub's ``repository`` webhooks and the HTTP provider's mapping.

The hooks are pure, so each test calls ``on_event`` directly. An event's entity must be the one
a cycle makes of the same item: the tests read that item through the provider's real paging
(``next()``) against the made-up APIs on 127.0.0.1 and compare the two.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any, TypeVar

import pytest

from ingestion.entities import entity_ref
from ingestion.errors import EventRejected
from ingestion.provider import DeferredEntity, Event, EventDelta, handles_events
from ingestion.settings import Settings
from providers._names import entity_name
from providers.config import ConfigError, ingestion_from_config
from providers.github import GitHubProvider, GitHubSession
from tests.support.fake_apis import GitHubApi, make_repo

T = TypeVar("T")
TOKEN = "ghp_madeUpEventsToken0123456789abcdefAB"
TOKEN_ENV = "TEST_GITHUB_EVENTS_TOKEN"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ingestion.yaml"
    path.write_text(dedent(text))
    return path


# -- GitHub -------------------------------------------------------------------------------


def github(api_url: str = "http://127.0.0.1:9", **kwargs: Any) -> GitHubProvider:
    return GitHubProvider("acme-repos", "acme", token_env=TOKEN_ENV, api_url=api_url, **kwargs)


def rest_repository(repo: dict[str, Any], org: str = "acme") -> dict[str, Any]:
    """``repo`` (a :func:`make_repo`) as a webhook's ``repository``: GitHub's REST shape, with
    the fields the entity does not use as well."""
    owner = repo["full_name"].split("/")[0]
    name = repo["name"]
    return {
        "id": repo["id"],
        "node_id": f"R_kgDO{repo['id']:08d}",
        "name": name,
        "full_name": repo["full_name"],
        "private": repo.get("visibility") != "public",
        "owner": {
            "login": owner,
            "id": 9919,
            "node_id": "O_kgDOAAAmvw",
            "type": "Organization",
            "site_admin": False,
        },
        "html_url": repo["html_url"],
        "description": repo["description"],
        "fork": False,
        "url": f"https://api.github.example/repos/{owner}/{name}",
        "created_at": repo["created_at"],
        "updated_at": "2024-05-01T12:00:00Z",
        "pushed_at": "2024-05-01T11:59:00Z",
        "git_url": f"git://github.example/{owner}/{name}.git",
        "ssh_url": f"git@github.example:{owner}/{name}.git",
        "clone_url": f"https://github.example/{owner}/{name}.git",
        "homepage": None,
        "size": 1234,
        "stargazers_count": 3,
        "watchers_count": 3,
        "language": "Python",
        "has_issues": True,
        "forks_count": 0,
        "archived": repo["archived"],
        "disabled": False,
        "open_issues_count": 1,
        "license": None,
        "allow_forking": False,
        "is_template": False,
        "topics": list(repo["topics"]),
        "visibility": repo.get("visibility", "private"),
        "forks": 0,
        "open_issues": 1,
        "watchers": 3,
        "default_branch": "main",
    }


def webhook(
    action: str,
    repo: dict[str, Any],
    *,
    org: str = "acme",
    changes: dict[str, Any] | None = None,
    topic: str = "github",
    kind: str = "repository",
) -> Event:
    """A ``repository`` webhook as GitHub delivers it to an organisation's hook."""
    payload: dict[str, Any] = {
        "action": action,
        "repository": rest_repository(repo),
        "organization": {
            "login": org,
            "id": 9919,
            "node_id": "O_kgDOAAAmvw",
            "url": f"https://api.github.example/orgs/{org}",
            "description": "",
        },
        "sender": {"login": "octocat", "id": 1, "type": "User", "site_admin": False},
    }
    if changes is not None:
        payload["changes"] = changes
    headers = {
        "x-github-event": kind,
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-github-hook-id": "292430182",
        "x-github-hook-installation-target-type": "organization",
        "user-agent": "GitHub-Hookshot/044aadd",
        "content-type": "application/json",
    }
    return Event(topic, payload, headers, "72d3162e-cc78-11e3-81ab-4c9367dc0958")


def in_burst(provider: GitHubProvider, work: Callable[[GitHubSession], T]) -> T:
    out: list[T] = []
    provider.around(lambda context: out.append(work(context)))
    return out[0]


def cycle_entities(provider: GitHubProvider) -> dict[str, DeferredEntity]:
    """A whole cycle read through ``next()`` (GitHub's GraphQL paging), by slug."""

    def read(context: GitHubSession) -> dict[str, DeferredEntity]:
        found: dict[str, DeferredEntity] = {}
        cursor = None
        for _ in range(100):
            page = provider.next(context, cursor)
            for deferred in page.entities:
                found[deferred.entity["metadata"]["annotations"]["github.com/project-slug"]] = (
                    deferred
                )
            if page.done:
                return found
            cursor = page.cursor
        raise AssertionError("the cycle did not end")

    return in_burst(provider, read)


def parts(delta: EventDelta | None) -> tuple[list[DeferredEntity], list[str]] | None:
    """``(added, removed)`` as lists, to compare whatever sequences a delta holds."""
    return None if delta is None else (list(delta.added), list(delta.removed))


def test_the_github_provider_handles_events() -> None:
    assert handles_events(github())


def test_an_edited_repository_is_the_entity_a_cycle_reads_of_it(token: str) -> None:
    # Given an organisation of 30 repositories: odd names, archived ones, no description,
    # topics or none, read by a whole cycle through GraphQL
    with GitHubApi(count=30, token=token) as api:
        provider = github(api.url, owner="group:platform", namespace="github", lifecycle="beta")
        read = cycle_entities(provider)
        repos = [copy.deepcopy(r) for r in api.repos]

    assert len(read) == 30
    for repo in repos:
        # When each is edited
        delta = provider.on_event(webhook("edited", repo))

        # Then the event's entity, and its location key, are the cycle's
        assert parts(delta) == ([read[repo["full_name"]]], [])


@pytest.mark.parametrize(
    "action", ["created", "edited", "archived", "unarchived", "publicized", "privatized"]
)
def test_actions_that_keep_the_repository_add_its_entity(action: str, token: str) -> None:
    # Given a repository as the cycle reads it after the change
    with GitHubApi(count=12, token=token) as api:
        repo = next(r for r in api.repos if r["name"] == "repo-0005")
        repo["archived"] = action == "archived"
        repo["visibility"] = "public" if action == "publicized" else "private"
        if action == "created":
            repo["topics"] = []
            repo["description"] = None
        provider = github(api.url)
        read = cycle_entities(provider)[repo["full_name"]]

    # When the webhook of the change arrives
    delta = provider.on_event(webhook(action, repo))

    # Then it adds the entity the cycle reads
    assert delta is not None
    assert list(delta.added) == [read]
    assert list(delta.removed) == []
    lifecycle = read.entity["spec"]["lifecycle"]
    assert lifecycle == ("deprecated" if action == "archived" else "production")


def test_archiving_removes_the_repository_when_archived_ones_are_left_out() -> None:
    provider = github(include_archived=False)
    repo = make_repo(5)

    archived = provider.on_event(webhook("archived", {**repo, "archived": True}))
    assert parts(archived) == ([], ["component:default/repo-0005"])

    # Any event of an archived repository is a removal then, not only "archived"
    edited = provider.on_event(webhook("edited", {**repo, "archived": True}))
    assert parts(edited) == ([], ["component:default/repo-0005"])

    unarchived = provider.on_event(webhook("unarchived", {**repo, "archived": False}))
    assert unarchived is not None and list(unarchived.removed) == []
    assert [d.entity["metadata"]["name"] for d in unarchived.added] == ["repo-0005"]


def test_a_deleted_repository_is_removed_under_its_ref() -> None:
    provider = github(namespace="github")
    odd = make_repo(3)  # ".Odd..Name_3--": its entity's name is made valid
    delta = provider.on_event(webhook("deleted", odd))
    assert parts(delta) == ([], [f"component:github/{entity_name(odd['name'])}".lower()])


def test_a_renamed_repository_is_removed_under_its_old_ref_and_added_as_the_cycle_reads_it(
    token: str,
) -> None:
    # Given a repository renamed on GitHub, and the cycle that reads it under its new name
    with GitHubApi(count=12, token=token) as api:
        api.rename("repo-0004", "repo-four")
        renamed = copy.deepcopy(next(r for r in api.repos if r["name"] == "repo-four"))
        provider = github(api.url)
        read = cycle_entities(provider)["acme/repo-four"]

    # When the webhook of the rename arrives
    changes = {"repository": {"name": {"from": "repo-0004"}}}
    delta = provider.on_event(webhook("renamed", renamed, changes=changes))

    # Then the old ref goes and the cycle's entity comes
    assert parts(delta) == ([read], ["component:default/repo-0004"])


def test_a_rename_that_keeps_the_ref_removes_nothing() -> None:
    # Refs are lower-case: "Repo-Five" and "repo-five" are one entity
    repo = {**make_repo(5), "name": "repo-five", "full_name": "acme/repo-five"}
    changes = {"repository": {"name": {"from": "Repo-Five"}}}
    delta = github().on_event(webhook("renamed", repo, changes=changes))
    assert delta is not None
    assert list(delta.removed) == []
    assert [entity_ref("Component", None, d.entity["metadata"]["name"]) for d in delta.added] == [
        "component:default/repo-five"
    ]


def test_a_renamed_archived_repository_left_out_is_removed_under_both_names() -> None:
    repo = {**make_repo(7), "name": "seven", "full_name": "acme/seven"}
    changes = {"repository": {"name": {"from": "repo-0007"}}}
    delta = github(include_archived=False).on_event(webhook("renamed", repo, changes=changes))
    assert parts(delta) == ([], ["component:default/repo-0007", "component:default/seven"])


def test_a_repository_transferred_in_is_added_as_the_cycle_reads_it(token: str) -> None:
    with GitHubApi(count=12, token=token) as api:
        repo = copy.deepcopy(next(r for r in api.repos if r["name"] == "repo-0009"))
        provider = github(api.url)
        read = cycle_entities(provider)["acme/repo-0009"]

    changes = {"owner": {"from": {"user": {"login": "someone", "id": 5, "type": "User"}}}}
    delta = provider.on_event(webhook("transferred", repo, changes=changes))
    assert parts(delta) == ([read], [])


def test_a_repository_transferred_out_is_removed() -> None:
    # The payload shows the repository where it is now, in another organisation
    repo = make_repo(6, org="elsewhere")
    changes = {"owner": {"from": {"organization": {"login": "ACME", "id": 9919}}}}
    delta = github().on_event(webhook("transferred", repo, org="elsewhere", changes=changes))
    assert parts(delta) == ([], ["component:default/repo-0006"])


def test_a_transfer_between_two_other_owners_is_not_ours() -> None:
    repo = make_repo(6, org="elsewhere")
    changes = {"owner": {"from": {"organization": {"login": "third", "id": 3}}}}
    assert github().on_event(webhook("transferred", repo, org="elsewhere", changes=changes)) is None


def test_any_other_action_of_our_repository_changes_nothing() -> None:
    assert parts(github().on_event(webhook("sponsored", make_repo(1)))) == ([], [])


def test_the_organisation_is_compared_without_case() -> None:
    repo = make_repo(1, org="ACME")
    delta = GitHubProvider("repos", "Acme").on_event(webhook("edited", repo, org="ACME"))
    assert delta is not None and len(delta.added) == 1


@pytest.mark.parametrize(
    "event",
    [
        webhook("edited", make_repo(1), topic="gitlab"),
        webhook("edited", make_repo(1), topic="GitHub"),
        webhook("edited", make_repo(1), kind="push"),
        Event("github", {"zen": "Design for failure.", "hook_id": 1}, {"x-github-event": "ping"}),
        Event("github", {"action": "edited", "repository": rest_repository(make_repo(1))}),
    ],
    ids=["another topic", "topics are exact", "another webhook", "ping", "no event header"],
)
def test_events_of_another_topic_or_kind_are_not_ours(event: Event) -> None:
    assert github().on_event(event) is None


@pytest.mark.parametrize("action", ["created", "edited", "deleted", "renamed", "archived"])
def test_repositories_of_another_organisation_are_not_ours(action: str) -> None:
    changes = {"repository": {"name": {"from": "old"}}}
    event = webhook(action, make_repo(2, org="umbrella"), org="umbrella", changes=changes)
    assert github().on_event(event) is None


def test_the_topic_can_be_configured() -> None:
    provider = github(event_topic="github-enterprise")
    assert provider.on_event(webhook("edited", make_repo(1))) is None
    delta = provider.on_event(webhook("deleted", make_repo(1), topic="github-enterprise"))
    assert parts(delta) == ([], ["component:default/repo-0001"])


def without(event: Event, path: str) -> Event:
    payload = copy.deepcopy(event.payload)
    *parents, last = path.split(".")
    node = payload
    for key in parents:
        node = node[key]
    del node[last]
    return Event(event.topic, payload, event.headers, event.delivery_id)


def changed(event: Event, path: str, value: Any) -> Event:
    payload = copy.deepcopy(event.payload)
    *parents, last = path.split(".")
    node = payload
    for key in parents:
        node = node[key]
    node[last] = value
    return Event(event.topic, payload, event.headers, event.delivery_id)


RENAMED = webhook("renamed", make_repo(1), changes={"repository": {"name": {"from": "old"}}})
MOVED_OUT = webhook(
    "transferred",
    make_repo(1, org="umbrella"),
    org="umbrella",
    changes={"owner": {"from": {"organization": {"login": "acme"}}}},
)


@pytest.mark.parametrize(
    ("event", "says"),
    [
        (without(webhook("edited", make_repo(1)), "action"), "the payload has no action"),
        (without(webhook("edited", make_repo(1)), "repository"), "the payload has no repository"),
        (
            without(webhook("edited", make_repo(1)), "repository.name"),
            "repository event (edited): the payload has no repository.name",
        ),
        (
            without(webhook("deleted", make_repo(1)), "repository.name"),
            "repository event (deleted): the payload has no repository.name",
        ),
        (
            without(webhook("created", make_repo(1)), "repository.html_url"),
            "repository event (created): the payload has no repository.html_url",
        ),
        (
            without(webhook("edited", make_repo(1)), "repository.topics"),
            "the payload has no repository.topics",
        ),
        (
            without(webhook("edited", make_repo(1)), "repository.description"),
            "the payload has no repository.description",
        ),
        (
            without(webhook("archived", make_repo(1)), "repository.archived"),
            "the payload has no repository.archived",
        ),
        (
            changed(webhook("archived", make_repo(1)), "repository.archived", "yes"),
            "repository.archived must be true or false, got the string 'yes'",
        ),
        (
            changed(webhook("edited", make_repo(1)), "repository.name", ""),
            "repository.name must be a non-empty string, got an empty string",
        ),
        (
            changed(webhook("edited", make_repo(1)), "repository.topics", ["a", 1]),
            "repository.topics must be a list of strings",
        ),
        (
            without(RENAMED, "changes.repository.name.from"),
            "repository event (renamed): the payload has no changes.repository.name.from",
        ),
        (without(RENAMED, "changes"), "the payload has no changes.repository.name.from"),
        (without(MOVED_OUT, "changes"), "the payload has no changes.owner.from"),
        (
            without(MOVED_OUT, "changes.owner.from.organization"),
            "no changes.owner.from.organization.login nor changes.owner.from.user.login",
        ),
        (
            without(
                without(
                    without(webhook("edited", make_repo(1)), "repository.owner"),
                    "repository.full_name",
                ),
                "organization",
            ),
            "the payload has no repository.owner.login",
        ),
        (Event("github", ["not", "an", "object"], {"x-github-event": "repository"}), "JSON object"),
    ],
)
def test_a_repository_event_without_a_field_it_needs_is_rejected_naming_it(
    event: Event, says: str
) -> None:
    with pytest.raises(EventRejected) as raised:
        github().on_event(event)
    assert says in str(raised.value)


def test_the_owner_falls_back_to_the_full_name_then_the_organisation() -> None:
    event = without(webhook("deleted", make_repo(1)), "repository.owner")
    assert parts(github().on_event(event)) == ([], ["component:default/repo-0001"])
    event = without(without(event, "repository.full_name"), "organization")
    event = changed(event, "organization", {"login": "acme"})
    assert parts(github().on_event(event)) == ([], ["component:default/repo-0001"])


def test_the_event_topic_of_a_github_provider_is_a_setting_of_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          - {name: repos, type: github, organization: acme}
          - {name: ghes, type: github, organization: acme, event_topic: ghes}
        """,
    )
    built = ingestion_from_config(path, settings=Settings())
    repos, ghes = built.registered("repos").provider, built.registered("ghes").provider
    assert isinstance(repos, GitHubProvider) and isinstance(ghes, GitHubProvider)
    assert (repos.event_topic, ghes.event_topic) == ("github", "ghes")


def test_an_empty_event_topic_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, "providers:\n  - {name: repos, type: github, organization: a, event_topic: ''}\n"
    )
    with pytest.raises(ConfigError, match=r"provider 'repos' \(providers\[0\]\), key event_topic"):
        ingestion_from_config(path, settings=Settings())
