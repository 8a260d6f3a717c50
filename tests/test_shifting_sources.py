"""Sources that change while a cycle pages through them: nothing live is ever removed.

Each source deletes, inserts and renames items between two requests of a cycle (the fakes'
``hooks``). Real cycles run through ``IncrementalIngestion.run_cycle`` against SQLite and
Postgres, with an observer that checks every sweep: nothing it removed may still be in the
source. After quiet cycles the catalog equals the source.

Every paging mode is covered: page numbers and offsets with removal checks (``item_url``) or
with the two grace cycles their ``default_options()`` ask for, keyset cursors, ``Link`` with a
keyset cursor, GitHub's REST listing (whose ``Link`` carries page numbers) and GitHub's
GraphQL connection. Controls show the fault is real: without checks or grace, a page-number or
offset cycle removes a live item.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingestion import IncrementalIngestion
from ingestion.engine import BurstReport
from providers._names import entity_name
from providers.github import GitHubProvider
from providers.http import (
    EntityTemplate,
    HttpProvider,
    LinkHeader,
    NextCursor,
    OffsetLimit,
    PageNumber,
    Pagination,
    TokenAuth,
)
from tests.support.fake_apis import GitHubApi, ItemsApi, expected_refs
from tests.support.ingestions import make_ingestion

TOKEN = "ghp_shiftingToken0123456789"
TOKEN_ENV = "TEST_SHIFTING_GITHUB_TOKEN"
TEMPLATE: dict[str, Any] = {
    "metadata": {"name": "{slug}", "annotations": {"example.com/id": "{id}"}},
    "spec": {"type": "service", "owner": "group:{team.name}", "lifecycle": "production"},
}
REPO_TEMPLATE: dict[str, Any] = {
    "metadata": {"name": "{name}", "annotations": {"github.com/project-slug": "{full_name}"}},
    "spec": {"type": "service", "owner": "acme", "lifecycle": "production"},
}
STYLES: dict[str, tuple[str, Pagination]] = {
    "page": ("/page", PageNumber(size_param="per_page", size=20, total_pages="meta.pages")),
    "offset": ("/offset", OffsetLimit(limit=20, total="total")),
    "cursor": ("/cursor", NextCursor(path="next", param="cursor")),
    "link": ("/link", LinkHeader()),
}


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def item_refs(api: ItemsApi) -> set[str]:
    return {f"component:default/{slug}".lower() for slug in api.slugs()}


def shift_items(api: ItemsApi) -> None:
    """Before page 2: three items of page 1 are deleted and one of page 2 is renamed; before
    page 4: an item is inserted at the front and another at the end."""
    api.hooks[len(api.requests) + 2] = lambda: (
        api.remove({0, 1, 2}),
        api.rename(30, "svc-renamed-30"),
    )
    api.hooks[len(api.requests) + 4] = lambda: api.insert([-5, 5000])


def served_refs(api: GitHubApi) -> set[str]:
    """The refs of every repository ``api`` serves: the organisation's, and those transferred
    out of it (their old URLs redirect to them)."""
    with api.lock:
        names = [repo["name"] for repo in api.repos]
    return {f"component:default/{entity_name(name)}".lower() for name in names}


def shift_repos(api: GitHubApi) -> None:
    """Before page 2: the three oldest repositories are deleted, one already read is renamed,
    one is transferred away; before page 3: one is created and one is transferred in."""
    api.hooks[len(api.requests) + 2] = lambda: (
        api.remove({"repo-0000", "repo-0001", "repo-0002"}),
        api.rename("repo-0005", "repo-five"),
        api.transfer("repo-0008", "elsewhere"),
    )
    api.hooks[len(api.requests) + 3] = lambda: (api.insert(1), api.insert(1, created_early=True))


# -- real cycles of the engine ------------------------------------------------------------


def items_provider(api: ItemsApi, style: str, *, item_url: bool) -> HttpProvider:
    path, pagination = STYLES[style]
    return HttpProvider(
        f"items-{style}",
        api.url + path,
        items="data.items",
        pagination=pagination,
        entity=EntityTemplate(TEMPLATE),
        item_url=api.url + "/items/{id}" if item_url else None,
        item_path="item",
    )


def github_rest_provider(api: GitHubApi, *, item_url: bool) -> HttpProvider:
    """GitHub's REST listing through the HTTP provider: its ``Link`` carries page numbers."""
    return HttpProvider(
        "acme-rest",
        api.url + "/orgs/acme/repos",
        params={"per_page": 10},
        pagination=LinkHeader(),
        entity=EntityTemplate(REPO_TEMPLATE, make_names_valid=True),
        auth=TokenAuth(TOKEN_ENV),
        item_url=api.url + "/repos/{owner.login}/{name}" if item_url else None,
    )


class SweepWatch:
    """An observer of bursts: at each sweep, what left the catalog must be gone from the
    source. Pages never delete, so what left the catalog in a burst was swept."""

    def __init__(self, catalog: Callable[[], set[str]], source: Callable[[], set[str]]) -> None:
        self.catalog, self.source = catalog, source
        self.known = catalog()
        self.sweeps = 0
        self.removed_live: set[str] = set()

    def __call__(self, report: BurstReport) -> None:
        now = self.catalog()
        if report.sweep is not None:
            self.sweeps += 1
            self.removed_live |= (self.known - now) & self.source()
        self.known = now


def watched(
    ingestion: IncrementalIngestion, name: str, source: Callable[[], set[str]]
) -> SweepWatch:
    watch = SweepWatch(lambda: set(ingestion.catalog.refs(name)), source)
    ingestion.observers.append(watch)
    return watch


def completed(ingestion: IncrementalIngestion, name: str) -> list[BurstReport]:
    reports = ingestion.run_cycle(name)
    assert reports[-1].outcome == "done", [r.reason for r in reports][-3:]
    return reports


SAFE_MODES = {
    "page numbers with removal checks": ("page", True),
    "offsets with removal checks": ("offset", True),
    "page numbers with grace cycles": ("page", False),
    "offsets with grace cycles": ("offset", False),
    "keyset cursor": ("cursor", False),
    "link with a keyset cursor": ("link", False),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", list(SAFE_MODES))
def test_cycles_of_every_paging_mode_never_remove_a_live_item(
    mode: str, database_url: str, tmp_path: Path
) -> None:
    # Given 95 items read 20 a page, one page or batch of checks a burst, with the options the
    # provider asks for itself (grace cycles for page numbers and offsets without item_url)
    style, item_url = SAFE_MODES[mode]
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=95, per_page=20) as api:
        provider = items_provider(api, style, item_url=item_url)
        name = provider.get_provider_name()
        ingestion.add_provider(
            provider, burst_length=0.001, burst_interval=0, removal_check_batch=7
        )
        grace = ingestion.registered(name).options.remove_after_missed_cycles
        assert grace == (2 if style in ("page", "offset") and not item_url else 1)
        watch = watched(ingestion, name, lambda: item_refs(api))
        completed(ingestion, name)
        assert set(ingestion.catalog.refs(name)) == item_refs(api)

        # When the source changes while the second cycle reads it
        shift_items(api)
        shifted = completed(ingestion, name)
        if item_url:  # the items the shift made page 2 skip were asked about
            assert sum(r.checked for r in shifted) > 0

        # Then no sweep removed a live item, and after quiet cycles catalog == source
        completed(ingestion, name)
        completed(ingestion, name)
        assert watch.sweeps == 4
        assert watch.removed_live == set()
        assert set(ingestion.catalog.refs(name)) == item_refs(api)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("style", ["page", "offset"])
def test_without_checks_or_grace_page_numbers_and_offsets_remove_a_live_item(
    style: str, database_url: str, tmp_path: Path
) -> None:
    # The control: what the checks and grace cycles prevent. Three items of page 1 deleted
    # while page 2 is asked for: the first three of page 2 are never returned, and a user who
    # sets remove_after_missed_cycles=1 lets the sweep remove them.
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=95, per_page=20) as api:
        provider = items_provider(api, style, item_url=False)
        name = provider.get_provider_name()
        ingestion.add_provider(
            provider, burst_length=0.001, burst_interval=0, remove_after_missed_cycles=1
        )
        watch = watched(ingestion, name, lambda: item_refs(api))
        completed(ingestion, name)
        shift_items(api)
        completed(ingestion, name)
        assert watch.sweeps == 2
        assert watch.removed_live == {f"component:default/svc-{n:04d}" for n in (20, 21, 22)}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("item_url", [True, False])
def test_githubs_page_number_links_skip_a_repository_unless_removals_are_checked(
    item_url: bool, database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=45, token=TOKEN) as api:
        ingestion.add_provider(
            github_rest_provider(api, item_url=item_url), burst_length=0.001, burst_interval=0
        )
        watch = watched(ingestion, "acme-rest", lambda: expected_refs(api))
        completed(ingestion, "acme-rest")
        # The Link URLs are github.com's: /organizations/{id}/repos?page=N
        assert {r.path for r in api.requests} == {"/orgs/acme/repos", "/organizations/9919/repos"}

        shift_repos(api)
        for _ in range(3):
            completed(ingestion, "acme-rest")
        assert watch.sweeps == 4

        if item_url:
            assert watch.removed_live == set()
            # The renamed repository's old URL redirects to it: present under its new name,
            # gone under the old one. The repository transferred to another owner redirects
            # the same way, on the same origin, and is present too: the item URL still
            # serves it, and a template cannot tell a transfer from a rename (the GitHub
            # provider knows the organisation and removes it).
            assert set(ingestion.catalog.refs("acme-rest")) == served_refs(api)
            assert "component:default/repo-0005" not in served_refs(api)
            assert "component:default/repo-five" in served_refs(api)
            assert served_refs(api) - expected_refs(api) == {"component:default/repo-0008"}
        else:
            # Four repositories of page 1 left (three deleted, one transferred away): the first
            # four of page 2 were never returned, and the sweep removed them.
            odd = f"component:default/{entity_name('.Odd..Name_13--')}".lower()
            assert watch.removed_live == {
                "component:default/repo-0010",
                "component:default/repo-0011",
                "component:default/repo-0012",
                odd,
            }


@pytest.mark.timeout(120)
def test_cycles_of_the_github_provider_never_remove_a_live_repository(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=45, token=TOKEN) as api:
        ingestion.add_provider(
            GitHubProvider("acme", "acme", token_env=TOKEN_ENV, api_url=api.url, per_page=10),
            burst_length=0.001,
            burst_interval=0,
        )
        watch = SweepWatch(lambda: set(ingestion.catalog.refs("acme")), lambda: expected_refs(api))
        ingestion.observers.append(watch)
        ingestion.run_cycle("acme")
        shift_repos(api)
        ingestion.run_cycle("acme")
        ingestion.run_cycle("acme")
        assert watch.sweeps == 3
        assert watch.removed_live == set()
        assert set(ingestion.catalog.refs("acme")) == expected_refs(api)
