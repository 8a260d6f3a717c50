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
from ingestion.errors import EventRejected, ProviderConfigError
from ingestion.provider import DeferredEntity, Event, EventDelta, handles_events
from ingestion.settings import Settings
from providers._names import entity_name
from providers.config import ConfigError, ingestion_from_config
from providers.github import GitHubProvider, GitHubSession
from providers.http import EntityTemplate, EventRule, HttpProvider, HttpSession
from tests.support.fake_apis import GitHubApi, ItemsApi, make_item, make_repo
from tests.support.github_events import rest_repository, webhook

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


# -- HTTP ---------------------------------------------------------------------------------

TEMPLATE: dict[str, Any] = {
    "metadata": {
        "name": "{slug}",
        "description": "{summary}",
        "annotations": {"example.com/id": "{id}", "example.com/public": "{public}"},
        "tags": "{tags}",
    },
    "spec": {"type": "service", "owner": "group:{team.name}", "lifecycle": "production"},
}
UPSERT = EventRule("inventory", match={"type": ["item.created", "item.updated"]}, added="item")
DELETE = EventRule("inventory", match={"type": "item.deleted"}, removed="item")


def http(url: str = "http://127.0.0.1:9", **kwargs: Any) -> HttpProvider:
    kwargs.setdefault("entity", EntityTemplate(TEMPLATE))
    kwargs.setdefault("events", [UPSERT, DELETE])
    return HttpProvider("services", url + "/link", items="data.items", **kwargs)


def http_cycle(provider: HttpProvider) -> dict[str, DeferredEntity]:
    """A whole cycle read through ``next()``, by entity name."""

    def read(context: HttpSession) -> dict[str, DeferredEntity]:
        found: dict[str, DeferredEntity] = {}
        cursor = None
        for _ in range(100):
            page = provider.next(context, cursor)
            found.update({d.entity["metadata"]["name"]: d for d in page.entities})
            if page.done:
                return found
            cursor = page.cursor
        raise AssertionError("the cycle did not end")

    out: list[dict[str, DeferredEntity]] = []
    provider.around(lambda context: out.append(read(context)))
    return out[0]


def inventory(payload: Any, topic: str = "inventory", **headers: str) -> Event:
    return Event(topic, payload, headers, "d-1")


@pytest.mark.parametrize("item_url", [False, True], ids=["list location", "item location"])
def test_an_items_event_entity_is_the_entity_a_cycle_reads_of_it(item_url: bool) -> None:
    # Given a source of 45 items read by a whole cycle, 20 a page
    with ItemsApi(count=45, per_page=20) as api:
        extra = {"item_url": api.url + "/items/{id}"} if item_url else {}
        provider = http(api.url, **extra)
        read = http_cycle(provider)
        items = copy.deepcopy(api.items)

    assert len(read) == 45
    for item in items:
        # When the source says each was updated
        delta = provider.on_event(inventory({"type": "item.updated", "item": item}))

        # Then the event's entity and location key are the cycle's
        assert parts(delta) == ([read[item["slug"]]], [])


def test_a_list_of_items_becomes_entities_and_removed_items_need_only_their_ref_fields() -> None:
    rule = EventRule("inventory", added="changes.upserted", removed="changes.deleted")
    with ItemsApi(count=6) as api:
        provider = http(api.url, events=rule)
        read = http_cycle(provider)
        items = copy.deepcopy(api.items)

    payload = {
        "changes": {
            "upserted": [items[1], items[4]],
            "deleted": [{"slug": "svc-0002"}, {"id": 3, "slug": "svc-0003"}],
        }
    }
    delta = provider.on_event(inventory(payload))
    assert parts(delta) == (
        [read["svc-0001"], read["svc-0004"]],
        ["component:default/svc-0002", "component:default/svc-0003"],
    )

    # Null or an empty list is no item
    empty = provider.on_event(inventory({"changes": {"upserted": [], "deleted": None}}))
    assert parts(empty) == ([], [])


def test_removed_values_may_be_bare_values_of_one_item_field() -> None:
    rule = EventRule("inventory", removed="deleted", removed_field="slug")
    provider = http(events=[rule])
    delta = provider.on_event(inventory({"deleted": ["svc-0007", "svc-0008", {"slug": "x-1"}]}))
    assert parts(delta) == (
        [],
        ["component:default/svc-0007", "component:default/svc-0008", "component:default/x-1"],
    )

    # A nested field, with a template that makes names valid
    template = EntityTemplate({"metadata": {"name": "{ref.name}"}}, make_names_valid=True)
    rule = EventRule("inventory", removed="gone", removed_field="ref.name")
    nested = http(entity=template, events=rule).on_event(inventory({"gone": ".Odd Name"}))
    assert parts(nested) == ([], [f"component:default/{entity_name('.Odd Name')}".lower()])


def test_the_first_rule_that_matches_decides_and_a_rename_keeps_its_new_ref() -> None:
    rename = EventRule(
        "inventory", match={"type": "item.renamed"}, added="item", removed="previous"
    )
    provider = http(events=[UPSERT, DELETE, rename])
    item = make_item(4)

    deleted = provider.on_event(inventory({"type": "item.deleted", "item": {"slug": "svc-0004"}}))
    assert parts(deleted) == ([], ["component:default/svc-0004"])

    moved = provider.on_event(
        inventory({"type": "item.renamed", "item": item, "previous": {"slug": "old-name"}})
    )
    assert moved is not None
    assert [d.entity["metadata"]["name"] for d in moved.added] == ["svc-0004"]
    assert list(moved.removed) == ["component:default/old-name"]

    # A "rename" to the same ref removes nothing
    same = provider.on_event(
        inventory({"type": "item.renamed", "item": item, "previous": {"slug": "SVC-0004"}})
    )
    assert same is not None and list(same.removed) == []


def test_events_of_another_topic_or_that_match_no_rule_are_not_ours() -> None:
    provider = http()
    item = make_item(1)
    assert provider.on_event(inventory({"type": "item.updated", "item": item}, "other")) is None
    assert provider.on_event(inventory({"type": "item.viewed", "item": item})) is None
    assert provider.on_event(inventory({"item": item})) is None
    assert provider.on_event(inventory(["item.updated"])) is None
    assert http(events=None).on_event(inventory({"type": "item.updated", "item": item})) is None


def test_matches_compare_values_strictly_and_headers_by_lower_case_name() -> None:
    rule = EventRule(
        "inventory",
        match={"meta.version": 1, "meta.live": True},
        headers={"X-Event-Type": ["upsert", "create"]},
        added="item",
    )
    provider = http(events=rule)
    item = make_item(2)
    payload = {"meta": {"version": 1, "live": True}, "item": item}
    assert provider.on_event(inventory(payload, **{"x-event-type": "create"})) is not None
    assert provider.on_event(inventory(payload, **{"x-event-type": "delete"})) is None
    assert provider.on_event(inventory(payload)) is None
    loose = {"meta": {"version": True, "live": 1}, "item": item}  # true is not 1
    assert provider.on_event(inventory(loose, **{"x-event-type": "create"})) is None


def test_a_rule_without_added_or_removed_claims_the_event_and_changes_nothing() -> None:
    provider = http(events=[EventRule("inventory", match={"type": "item.viewed"})])
    assert parts(provider.on_event(inventory({"type": "item.viewed"}))) == ([], [])


NAMESPACED = EntityTemplate({"metadata": {"name": "{slug}", "namespace": "{team.name}"}})


@pytest.mark.parametrize(
    ("events", "payload", "says"),
    [
        (
            UPSERT,
            {"type": "item.updated"},
            "events[0] (topic 'inventory'): added: the payload has no item",
        ),
        (
            UPSERT,
            {"type": "item.updated", "item": {"id": 5, "summary": "no slug"}},
            "added: the payload has no item.slug (for metadata.name)",
        ),
        (
            EventRule("inventory", added="items"),
            {"items": [make_item(1), {"id": 2, "slug": None}]},
            "added: the payload has no items.1.slug",
        ),
        (UPSERT, {"type": "item.created", "item": "svc-0001"}, "added: item must be a JSON object"),
        (
            [UPSERT, DELETE],
            {"type": "item.deleted", "item": {"id": 5}},
            "events[1] (topic 'inventory'): removed: the payload has no item.slug (for the ref)",
        ),
        (
            DELETE,
            {"type": "item.deleted", "item": 5},
            "removed: item must be a JSON object, got int 5 (or set removed_field",
        ),
        (
            EventRule("inventory", removed="gone", removed_field="slug"),
            {"gone": ["a", None]},
            "removed: gone.1 holds null, not a slug",
        ),
        (DELETE, {"type": "item.deleted"}, "removed: the payload has no item"),
    ],
)
def test_an_items_event_without_what_it_needs_is_rejected_naming_the_path(
    events: Any, payload: Any, says: str
) -> None:
    with pytest.raises(EventRejected) as raised:
        http(events=events).on_event(inventory(payload))
    assert says in str(raised.value)


def test_a_removal_needs_every_field_of_the_ref_the_namespace_too() -> None:
    # The namespace comes from the item: without it the ref would be another entity's
    provider = http(entity=NAMESPACED, events=DELETE)
    with pytest.raises(EventRejected, match=r"the payload has no item\.team\.name"):
        provider.on_event(inventory({"type": "item.deleted", "item": {"slug": "svc-0001"}}))
    delta = provider.on_event(
        inventory({"type": "item.deleted", "item": {"slug": "svc-0001", "team": {"name": "ops"}}})
    )
    assert parts(delta) == ([], ["component:ops/svc-0001"])


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        (EventRule(""), "events[0]: topic must not be empty"),
        (EventRule("t", added="x", removed_field="id"), "removed_field needs removed"),
        (
            EventRule("t", removed="gone", removed_field="id"),
            "removed_field 'id' cannot make a ref alone: the template's kind, metadata.namespace "
            "and metadata.name also use slug",
        ),
        (EventRule("t", match={"": 1}), "match: a path must not be empty"),
    ],
)
def test_unusable_rules_are_refused_naming_the_provider(rule: EventRule, says: str) -> None:
    with pytest.raises(ProviderConfigError) as raised:
        http(events=rule)
    assert str(raised.value).startswith("provider 'services': ")
    assert says in str(raised.value)


def test_the_events_of_an_http_provider_are_settings_of_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          - name: services
            type: http
            url: http://127.0.0.1:9/services
            item_url: "http://127.0.0.1:9/services/{id}"
            entity: {metadata: {name: "{slug}"}}
            events:
              - topic: inventory
                match: {type: [item.created, item.updated]}
                headers: {X-Source: inventory}
                added: item
              - topic: inventory
                match: {type: item.deleted}
                removed: deleted_slugs
                removed_field: slug
          - name: one-rule
            type: http
            url: http://127.0.0.1:9/teams
            entity: {metadata: {name: "{id}"}, kind: Group}
            events: {topic: teams, added: ""}
        """,
    )
    built = ingestion_from_config(path, settings=Settings())
    services = built.registered("services").provider
    assert isinstance(services, HttpProvider)
    assert services.events == (
        EventRule(
            "inventory",
            match={"type": ["item.created", "item.updated"]},
            headers={"X-Source": "inventory"},
            added="item",
        ),
        EventRule(
            "inventory",
            match={"type": "item.deleted"},
            removed="deleted_slugs",
            removed_field="slug",
        ),
    )
    upsert = {"type": "item.created", "item": {"id": 3, "slug": "svc-3"}}
    delta = services.on_event(inventory(upsert, **{"x-source": "inventory"}))
    assert delta is not None
    assert [(d.entity["metadata"]["name"], d.location_key) for d in delta.added] == [
        ("svc-3", "url:http://127.0.0.1:9/services/3")
    ]
    delete = {"type": "item.deleted", "deleted_slugs": ["svc-3"]}
    assert parts(services.on_event(inventory(delete))) == ([], ["component:default/svc-3"])

    one_rule = built.registered("one-rule").provider
    assert isinstance(one_rule, HttpProvider)
    assert one_rule.events == (EventRule("teams", added=""),)
    team = one_rule.on_event(Event("teams", {"id": "platform"}))
    assert team is not None
    assert [d.entity["kind"] for d in team.added] == ["Group"]


HTTP = """\
providers:
  - name: services
    type: http
    url: http://127.0.0.1:9/services
    entity: {metadata: {name: "{slug}"}}
"""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "    events: {topic: inventory, add: item}\n",
            "provider 'services' (providers[0]), key events.add: is not a setting of an event "
            "rule; expected one of topic, match, headers, added, removed, removed_field",
        ),
        (
            "    events: [{topic: inventory, added: item}, {topic: inventory, remove: x}]\n",
            "provider 'services' (providers[0]), key events[1].remove: is not a setting of an "
            "event rule",
        ),
        (
            "    events: {added: item}\n",
            "provider 'services' (providers[0]), key events.topic: is required",
        ),
        (
            "    events: inventory\n",
            "provider 'services' (providers[0]), key events: must be an event rule",
        ),
        (
            "    events: {topic: inventory, match: [type]}\n",
            "provider 'services' (providers[0]), key events.match: Input should be a valid "
            "dictionary",
        ),
        (
            "    events: {topic: inventory, added: item, removed_field: id}\n",
            "provider 'services' (providers[0]): events[0]: removed_field needs removed",
        ),
        (
            "    evnets: {topic: inventory}\n",
            "provider 'services' (providers[0]), key evnets: is not a setting of type 'http'; "
            "expected one of api_version, auth, backoff, burst_interval, burst_length, entity, "
            "events,",
        ),
    ],
)
def test_a_bad_events_setting_fails_naming_the_provider_and_the_key(
    tmp_path: Path, text: str, says: str
) -> None:
    path = write(tmp_path, HTTP + text)
    with pytest.raises(ConfigError) as raised:
        ingestion_from_config(path, settings=Settings())
    assert str(raised.value).startswith(f"{path}: ")
    assert says in str(raised.value)
