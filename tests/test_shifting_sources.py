"""Sources that change while a cycle pages through them: nothing live is ever removed.

Each source deletes, inserts and renames items between two requests of a cycle (the fakes'
``hooks``). Every sweep is checked: nothing it removed may still be in the source. After a
quiet cycle the catalog equals the source.

Two harnesses:

- ``Protocol`` drives a provider the way the engine's cycle does (pages inside ``around()``,
  then ``check_removals`` in batches for the candidates, or grace cycles from
  ``default_options()``), against an in-memory catalog. It covers every paging mode, with and
  without removal checks, including a control that shows the fault the checks prevent.
- ``IncrementalIngestion.run_cycle`` runs real cycles of the modes whose paging cannot skip
  (keyset cursors, ``Link`` with a keyset cursor, GitHub's GraphQL connection), with an observer
  that checks each sweep against the source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ingestion.engine import BurstReport
from ingestion.entities import entity_ref
from ingestion.provider import (
    DeferredEntity,
    IncrementalEntityProvider,
    RemovalCandidate,
    checks_removals,
)
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


def ref_of(entity: DeferredEntity) -> str:
    metadata = entity.entity["metadata"]
    return entity_ref(str(entity.entity.get("kind")), metadata.get("namespace"), metadata["name"])


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


def shift_repos(api: GitHubApi) -> None:
    """Before page 2: the three oldest repositories are deleted, one already read is renamed,
    one is transferred away; before page 3: one is created and one is transferred in."""
    api.hooks[len(api.requests) + 2] = lambda: (
        api.remove({"repo-0000", "repo-0001", "repo-0002"}),
        api.rename("repo-0005", "repo-five"),
        api.transfer("repo-0008", "elsewhere"),
    )
    api.hooks[len(api.requests) + 3] = lambda: (api.insert(1), api.insert(1, created_early=True))


# -- the engine's cycle, played against an in-memory catalog ------------------------------


@dataclass
class Protocol:
    """A catalog kept the way the engine keeps it: pages, then removal checks (or grace
    cycles), then a sweep that is asserted against the source."""

    provider: IncrementalEntityProvider[Any, Any]
    source: Callable[[], set[str]]
    grace: int | None = None
    batch: int = 7
    catalog: dict[str, RemovalCandidate] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    removed_live: set[str] = field(default_factory=set)

    def cycle(self) -> set[str]:
        """Run one cycle; the refs its sweep removed."""
        removed: set[str] = set()

        def burst(context: Any) -> None:
            seen: dict[str, DeferredEntity] = {}
            cursor = None
            for _ in range(1000):
                page = self.provider.next(context, cursor)
                seen.update((ref_of(e), e) for e in page.entities)
                if page.done:
                    break
                cursor = page.cursor
            candidates = [c for ref, c in self.catalog.items() if ref not in seen]
            if checks_removals(self.provider):
                for start in range(0, len(candidates), self.batch):
                    batch: Sequence[RemovalCandidate] = candidates[start : start + self.batch]
                    check = self.provider.check_removals(context, batch)
                    removed.update(set(check.gone) & {c.ref for c in batch})
                    for entity in check.present:
                        seen.setdefault(ref_of(entity), entity)
            else:
                grace = self.grace or self.provider.default_options().get(
                    "remove_after_missed_cycles", 1
                )
                for c in candidates:
                    self.missed[c.ref] = self.missed.get(c.ref, 0) + 1
                    if self.missed[c.ref] >= grace:
                        removed.add(c.ref)
            for ref, entity in seen.items():
                self.missed.pop(ref, None)
                self.catalog[ref] = RemovalCandidate(ref, entity.entity, entity.location_key)

        self.provider.around(burst)
        # The sweep: nothing it removes may still be in the source.
        self.removed_live |= removed & self.source()
        for ref in removed:
            self.catalog.pop(ref, None)
            self.missed.pop(ref, None)
        return removed


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


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("style", "item_url"),
    [
        ("page", True),
        ("page", False),
        ("offset", True),
        ("offset", False),
        ("cursor", False),
        ("link", False),
    ],
)
def test_items_shifting_mid_cycle_never_lose_a_live_entity(style: str, item_url: bool) -> None:
    with ItemsApi(count=95, per_page=20) as api:
        protocol = Protocol(items_provider(api, style, item_url=item_url), lambda: item_refs(api))
        protocol.cycle()
        assert set(protocol.catalog) == item_refs(api)

        # When the source changes while the second cycle reads it
        shift_items(api)
        protocol.cycle()

        # Then no sweep removed a live entity, and after quiet cycles catalog == source
        protocol.cycle()
        protocol.cycle()
        assert protocol.removed_live == set()
        assert set(protocol.catalog) == item_refs(api)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("style", ["page", "offset"])
def test_without_checks_or_grace_page_numbers_and_offsets_remove_a_live_entity(
    style: str,
) -> None:
    # The control: what the checks and grace cycles prevent. Three items of page 1 deleted
    # while page 2 is asked for: the first three of page 2 are never returned.
    with ItemsApi(count=95, per_page=20) as api:
        protocol = Protocol(
            items_provider(api, style, item_url=False), lambda: item_refs(api), grace=1
        )
        protocol.cycle()
        shift_items(api)
        protocol.cycle()
        assert protocol.removed_live == {f"component:default/svc-{n:04d}" for n in (20, 21, 22)}


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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("item_url", [True, False])
def test_githubs_page_number_links_skip_a_repository_unless_removals_are_checked(
    item_url: bool,
) -> None:
    with GitHubApi(count=45, token=TOKEN) as api:
        protocol = Protocol(
            github_rest_provider(api, item_url=item_url), lambda: expected_refs(api)
        )
        protocol.cycle()
        # The Link URLs are github.com's: /organizations/{id}/repos?page=N
        assert {r.path for r in api.requests} == {"/orgs/acme/repos", "/organizations/9919/repos"}

        shift_repos(api)
        protocol.cycle()
        protocol.cycle()
        protocol.cycle()

        if item_url:
            assert protocol.removed_live == set()
            # A renamed or transferred repository answers 301, which the HTTP provider cannot
            # interpret: it keeps the old entity (the GitHub provider follows the redirect).
            moved = {"component:default/repo-0005", "component:default/repo-0008"}
            assert set(protocol.catalog) == expected_refs(api) | moved
        else:
            # Four repositories of page 1 left (three deleted, one transferred away): the first
            # four of page 2 were never returned, and the sweep removed them.
            odd = f"component:default/{entity_name('.Odd..Name_13--')}".lower()
            assert protocol.removed_live == {
                "component:default/repo-0010",
                "component:default/repo-0011",
                "component:default/repo-0012",
                odd,
            }


@pytest.mark.timeout(60)
def test_github_graphql_paging_and_checks_never_lose_a_live_repository() -> None:
    with GitHubApi(count=45, token=TOKEN) as api:
        provider = GitHubProvider("acme", "acme", token_env=TOKEN_ENV, api_url=api.url, per_page=10)
        protocol = Protocol(provider, lambda: expected_refs(api))
        protocol.cycle()
        shift_repos(api)
        protocol.cycle()
        protocol.cycle()
        assert protocol.removed_live == set()
        assert set(protocol.catalog) == expected_refs(api)


# -- real cycles of the engine ------------------------------------------------------------


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


@pytest.mark.timeout(120)
@pytest.mark.parametrize("style", ["cursor", "link"])
def test_cycles_of_keyset_paging_never_remove_a_live_item(
    style: str, database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=95, per_page=20) as api:
        name = f"items-{style}"
        ingestion.add_provider(
            items_provider(api, style, item_url=False), burst_length=0.001, burst_interval=0
        )
        watch = SweepWatch(lambda: set(ingestion.catalog.refs(name)), lambda: item_refs(api))
        ingestion.observers.append(watch)
        ingestion.run_cycle(name)
        shift_items(api)
        ingestion.run_cycle(name)
        ingestion.run_cycle(name)
        assert watch.sweeps == 3
        assert watch.removed_live == set()
        assert set(ingestion.catalog.refs(name)) == item_refs(api)


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
