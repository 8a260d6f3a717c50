"""The operator page in a real headless Chromium, against the API served by uvicorn.

Cycles run through the real engine (in this process, or in real Celery workers); the browser
reads and steers them through the page as an operator would. Every test fails on any console
error or uncaught exception of the page. `make screenshots` writes the screenshots in docs/images.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect

from ingestion import IncrementalIngestion, Settings
from ingestion.api import create_api
from ingestion.engine import BurstReport
from ingestion.errors import UnknownProvider
from ingestion.settings import EMBEDDED_BROKER
from ingestion.store import Store
from ingestion.web import COOKIE
from providers.http import EntityTemplate, HttpProvider, LinkHeader, TokenAuth
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.api_server import serve
from tests.support.browser import Tab, chromium, open_tab
from tests.support.fake_apis import Answer, ItemsApi
from tests.support.ingestions import client_ingestion
from tests.support.synthetic_app import build
from tests.support.tokens import tampered
from tests.support.waiting import wait_until
from tests.support.workers import Workers

pytestmark = pytest.mark.browser

TOKEN = "web-admin-token-0123456789abcdef"
# Milliseconds to await a state the page shows only while it lasts, over several refreshes.
LIVE = 20_000
FAST = {"burst_length": 60, "burst_interval": 0, "rest_length": 3600, "backoff": [0.05]}


@dataclass
class Site:
    url: str
    ingestion: IncrementalIngestion
    source: SyntheticSource


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    store = Store(url)
    store.migrate()
    store.dispose()
    return url


def site_settings(tmp_path: Path) -> Settings:
    """A SQLite database and the file broker in ``tmp_path``; short page limits."""
    return Settings(
        database_url=sqlite_url(tmp_path),
        broker_url=EMBEDDED_BROKER,
        broker_dir=tmp_path / "broker",
        page_timeout=5.0,
        time_limit_grace=1.0,
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The API and page of two providers: ``services`` (300 entities, a guard) and ``broken``."""
    source = SyntheticSource(count=300, per_page=25)
    with SourceServer(source) as server:
        guarded = {
            **FAST,
            "burst_length": 0.001,
            "reject_removals_above_percentage": 20,
            "hold_removals_until_approved": True,
        }
        specs = [
            {"name": "services", "url": server.url, "per_page": 25, "options": guarded},
            {"name": "broken", "url": server.url + "/missing", "options": FAST},
        ]
        ingestion = build(site_settings(tmp_path), specs)
        with serve(create_api(ingestion, admin_token=TOKEN)) as url:
            yield Site(url, ingestion, source)
        ingestion.store.dispose()


@pytest.fixture
def tab(browser: Browser, site: Site) -> Iterator[Tab]:
    """A fresh browser context on the site; the test fails on any console or page error."""
    opened = open_tab(browser, site.url)
    yield opened
    opened.context.close()
    assert opened.problems == []


def log_in(tab: Tab, token: str = TOKEN) -> Page:
    page = tab.open("/login")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Providers", level=1)).to_be_visible()
    return page


def history(site: Site) -> None:
    """Three cycles of ``services``: two rejected entities, a failed burst, a held-back sweep."""
    site.source.invalid = {3, 7}
    site.ingestion.run_cycle("services")
    site.source.invalid = set()
    site.source.version = 1

    def fail_once(report: BurstReport) -> None:
        if report.pages == 1 and report.burst == 5:
            site.source.fail_requests = 1

    site.ingestion.run_cycle("services", progress=fail_once)
    site.source.drop(0.3)
    site.ingestion.run_cycle("services")
    site.ingestion.store.start("broken")
    site.ingestion.engine.run_step("broken", site.ingestion.store.status("broken").ticket, "t/1")


# -- login, session, security --------------------------------------------------------------


@pytest.mark.timeout(90)
def test_login_refuses_a_wrong_token_opens_a_session_and_logout_ends_it(
    tab: Tab, site: Site
) -> None:
    page = tab.open("/")
    expect(page).to_have_url(re.compile(r"/login$"))  # no session: the login page
    expect(page.get_by_role("heading", name="Incremental ingestion")).to_be_visible()
    tab.screenshot("login")

    page.get_by_label("Admin token").fill("not-the-admin-token-at-all")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong token")
    tab.expect_problems("401")  # the refused login is logged by the browser, on purpose
    expect(page).to_have_url(re.compile(r"/login$"))

    log_in(tab)
    [cookie] = tab.context.cookies()
    assert cookie["name"] == COOKIE
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # out of the page's scripts' reach
    assert TOKEN not in page.content()
    expect(page.get_by_role("heading", name="services")).to_be_visible()

    # The session cookie reads the API; the token is sent nowhere but the login.
    read = httpx.get(site.url + "/incremental/providers", cookies={COOKIE: cookie["value"]})
    assert read.status_code == 200

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    assert tab.context.cookies() == []
    tab.open("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    # The old cookie is refused from now on, with a message saying why.
    stale = httpx.get(site.url + "/incremental/providers", cookies={COOKIE: cookie["value"]})
    assert stale.status_code == 401
    assert "session has ended" in stale.json()["error"]


@pytest.mark.timeout(60)
def test_the_session_cookie_steers_only_with_its_csrf_token(site: Site) -> None:
    login = httpx.post(site.url + "/login", json={"token": TOKEN})
    assert login.status_code == 200
    csrf = login.json()["csrf"]
    cookies = {COOKIE: login.cookies[COOKIE]}
    assert TOKEN not in login.text and TOKEN not in login.headers["set-cookie"]
    assert httpx.get(site.url + "/session", cookies=cookies).json()["csrf"] == csrf
    trigger = site.url + "/incremental/providers/services/trigger"
    before = site.ingestion.store.status("services").ticket

    missing = httpx.post(trigger, cookies=cookies)
    wrong = httpx.post(trigger, cookies=cookies, headers={"X-CSRF-Token": tampered(csrf)})
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert "X-CSRF-Token" in missing.json()["error"]
    assert site.ingestion.store.status("services").ticket == before

    steered = httpx.post(trigger, cookies=cookies, headers={"X-CSRF-Token": csrf})
    assert steered.status_code == 200
    # A forged cookie, and a logout without the CSRF token, are refused.
    forged = httpx.get(site.url + "/entities", cookies={COOKIE: "a.9999999999.b"})
    assert forged.status_code == 401
    assert httpx.post(site.url + "/logout", cookies=cookies).status_code == 403
    assert httpx.get(site.url + "/session", cookies=cookies).status_code == 200


@pytest.mark.timeout(60)
def test_without_a_token_the_page_needs_no_login_but_refuses_cross_site_steering(
    browser: Browser, site: Site
) -> None:
    with serve(create_api(site.ingestion, insecure=True)) as url:
        tab = open_tab(browser, url)
        page = tab.open("/")
        expect(page.get_by_role("heading", name="Providers", level=1)).to_be_visible()
        expect(page.get_by_role("button", name="Log out")).to_be_hidden()
        tab.context.close()
        assert tab.problems == []
        trigger = url + "/incremental/providers/services/trigger"
        evil = httpx.post(trigger, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        assert httpx.post(trigger).status_code == 200  # curl and scripts send no Origin


@pytest.mark.timeout(60)
def test_everything_the_page_loads_comes_from_the_api_itself(tab: Tab, site: Site) -> None:
    history(site)
    page = log_in(tab)
    page.get_by_role("link", name="services", exact=True).click()
    expect(page.get_by_role("heading", name="Recent bursts")).to_be_visible()
    page.get_by_role("navigation").get_by_role("link", name="Catalog").click()
    expect(page.get_by_role("heading", name="Catalog")).to_be_visible()
    assert tab.requests
    assert all(url.startswith(site.url + "/") for url in tab.requests), tab.requests
    response = httpx.get(site.url + "/login")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


# -- the provider page ---------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_provider_page_shows_cycles_bursts_errors_checkpoints_and_held_removals(
    tab: Tab, site: Site
) -> None:
    history(site)
    page = log_in(tab)
    page.get_by_role("link", name="services", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/providers/services$"))
    expect(page.get_by_role("heading", name="services", level=1)).to_be_visible()

    cycles = page.get_by_role("table", name="Cycles")
    expect(cycles.get_by_role("row")).to_have_count(4)  # a header and three cycles
    first = cycles.get_by_role("row").nth(3)
    expect(first).to_contain_text("completed")
    expect(first.get_by_role("cell").nth(8)).to_have_text("2")  # rejected
    held = cycles.get_by_role("row").nth(1)
    expect(held.get_by_role("cell").nth(10)).to_have_text("100")  # blocked

    chart = page.get_by_role("img", name="Recent bursts")
    expect(chart).to_be_visible()
    bursts = site.ingestion.store.bursts("services", limit=60)
    failed = [b for b in bursts if b["outcome"] == "failed"]
    assert len(failed) == 1
    expect(page.locator("svg.chart g.burst")).to_have_count(len(bursts))
    expect(page.locator("svg.chart g.burst.failed")).to_have_count(1)
    expect(page.locator("figcaption")).to_contain_text(f"{len(bursts)} bursts from")

    section = page.get_by_role("region", name="Removals held back")
    expect(section).to_contain_text("100 entities of services")
    expect(section).to_contain_text("20%")
    expect(section).to_contain_text("They wait for an operator")
    expect(
        section.get_by_role("table", name="Held-back entities").get_by_role("row")
    ).to_have_count(10 + 1)

    errors = page.get_by_role("table", name="Errors")
    expect(errors.get_by_role("row")).to_have_count(3 + 1)  # two entities, one burst
    rule = page.get_by_label("Rule")
    [entity_rule] = {e["rule"] for e in site.ingestion.errors("services", kind="entity")}
    rule.select_option(entity_rule)
    expect(errors.get_by_role("row")).to_have_count(2 + 1)
    expect(errors).to_contain_text("bad name 3")
    expect(errors).to_contain_text("page 1")
    expect(errors).not_to_contain_text("500")

    checkpoints = page.get_by_role("table", name="Page checkpoints")
    expect(checkpoints.get_by_role("row").nth(1)).to_contain_text('{"page":9}')
    page.get_by_role("heading", name="services", level=1).scroll_into_view_if_needed()
    tab.screenshot("provider")


# -- the overview under real workers -------------------------------------------------------


@pytest.mark.workers
@pytest.mark.timeout(180)
def test_overview_shows_two_providers_mid_cycle_under_a_real_worker(
    browser: Browser,
    pg_url: str,
    redis_url: str,
    workers_factory: Callable[..., Workers],
) -> None:
    sources = {  # libraries serves members 300-499: refs of its own
        "libraries": SyntheticSource(count=500, per_page=10, delay=0.12, removed=set(range(300))),
        "services": SyntheticSource(count=300, per_page=10, delay=0.12),
    }
    with SourceServer(sources["libraries"]) as one, SourceServer(sources["services"]) as two:
        options = {"burst_length": 0.5, "burst_interval": 0.05, "rest_length": 1, "backoff": [1]}
        specs = [
            {"name": name, "url": server.url, "per_page": 10, "options": options}
            for name, server in (("libraries", one), ("services", two))
        ]
        workers = workers_factory(pg_url, redis_url, specs)
        workers.start("w1", concurrency=2)
        client = client_ingestion(workers)
        try:

            def mid_second_cycle() -> bool:
                try:
                    statuses = [client.store.status(n) for n in sources]
                except UnknownProvider:  # the worker has not registered them yet
                    return False
                return all(
                    s.last_completed_cycle and s.current_cycle and s.current_cycle["pages"] >= 2
                    for s in statuses
                )

            # Each cycle takes seconds (slow pages); the page reads them while they are open.
            wait_until(mid_second_cycle, timeout=90, what="both providers mid-cycle, one done")
            with serve(create_api(client, admin_token=TOKEN)) as url:
                tab = open_tab(browser, url)
                page = log_in(tab)
                page.evaluate("window.sameDocument = true")
                # A provider rests a second between cycles of a few: a refresh (every 3 s)
                # can find one resting, so each state is awaited over several refreshes.
                for name in ("libraries", "services"):
                    card = page.get_by_role("article", name=name)
                    expect(card.get_by_text(re.compile(r"^Cycle #\d+$"))).to_be_visible(
                        timeout=LIVE
                    )
                    expect(card.get_by_role("progressbar")).to_be_visible(timeout=LIVE)
                    expect(card).to_contain_text(re.compile(r"About .+ left"), timeout=LIVE)
                    expect(card).to_contain_text(
                        re.compile(r"ingest · (running|waiting)"), timeout=LIVE
                    )
                    expect(card.get_by_role("list", name=re.compile("counts"))).to_contain_text(
                        "written", timeout=LIVE
                    )
                summary = page.get_by_role("region", name="Health summary")
                expect(summary).to_contain_text("Healthy", timeout=LIVE)
                expect(summary).to_contain_text("2 open cycles", timeout=LIVE)
                for name in sources:
                    card = page.get_by_role("article", name=name)
                    expect(card.get_by_text(re.compile(r"^Cycle #\d+$"))).to_be_visible(
                        timeout=LIVE
                    )
                tab.screenshot("overview")

                # It refreshes by itself: the counts move without the page being reloaded.
                counts = page.get_by_role("article", name="services").get_by_role(
                    "list", name=re.compile("counts")
                )
                before = counts.inner_text()
                expect(counts).not_to_have_text(before, timeout=LIVE)
                assert page.evaluate("window.sameDocument") is True
                tab.context.close()
        finally:
            client.store.dispose()
    assert tab.problems == []


# -- actions -------------------------------------------------------------------------------


def confirm_dialog(page: Page, button: str, says: str) -> None:
    """Click ``button``; the dialog must say ``says``; confirm it."""
    page.get_by_role("button", name=button, exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(says)
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).to_be_hidden()


@pytest.mark.timeout(90)
def test_each_action_asks_first_then_shows_what_the_api_did(tab: Tab, site: Site) -> None:
    site.ingestion.run_cycle("services")
    store = site.ingestion.store
    page = log_in(tab)
    status = page.locator("#status")

    # Going back from the question changes nothing.
    ticket = store.status("services").ticket
    page.get_by_role("button", name="Trigger services").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Run its pending step (rest, due in 59 min")
    dialog.get_by_role("button", name="Go back").click()
    expect(dialog).to_be_hidden()
    assert store.status("services").ticket == ticket

    confirm_dialog(page, "Trigger services", "A burst that is running now is left alone")
    expect(status).to_contain_text("provider 'services': the pending step is due now")
    assert store.status("services").ticket == ticket + 1

    confirm_dialog(page, "Start services", "End the rest of services and begin a new cycle now")
    expect(status).to_contain_text("a new cycle begins now. Next: ingest")
    opened = store.status("services").current_cycle
    assert opened is not None
    card = page.get_by_role("article", name="services")
    expect(card).to_contain_text(f"Cycle #{opened['id']}")

    confirm_dialog(page, "Cancel cycle services", f"Cancel the open cycle #{opened['id']}")
    expect(status).to_contain_text("the open cycle is cancelled")
    assert {c["id"]: c["status"] for c in store.cycles("services")}[opened["id"]] == "cancelled"

    confirm_dialog(page, "Reset services", "300 entities stay in the catalog")
    expect(status).to_contain_text("ingestion records purged")
    assert store.cycles("services") == []
    assert store.count_entities("services") == 300


@pytest.mark.timeout(60)
def test_a_refused_action_shows_the_api_message(tab: Tab, site: Site) -> None:
    page = log_in(tab)
    # The page has read the providers before the session ends: a first read refused would
    # leave no button to click.
    expect(page.get_by_role("button", name="Start broken", exact=True)).to_be_visible()
    # The session is ended elsewhere (a logout in another window with the same cookie).
    [cookie] = tab.context.cookies()
    cookies = {COOKIE: cookie["value"]}
    csrf = httpx.get(site.url + "/session", cookies=cookies).json()["csrf"]
    assert httpx.post(site.url + "/logout", cookies=cookies, headers={"X-CSRF-Token": csrf})
    ticket = site.ingestion.store.status("broken").ticket

    confirm_dialog(page, "Start broken", "begin a new cycle now")

    alert = page.locator("#alert")
    expect(alert).to_contain_text("Start broken failed: the session has ended")
    expect(alert).to_contain_text("log in again")
    assert site.ingestion.store.status("broken").ticket == ticket
    expect(page.locator("#read-error")).to_contain_text("Not logged in any more", timeout=10_000)
    tab.expect_problems("401")


@pytest.mark.timeout(90)
def test_a_held_back_sweep_is_approved_or_dismissed_from_the_page(tab: Tab, site: Site) -> None:
    store = site.ingestion.store
    site.ingestion.run_cycle("services")
    site.source.drop(0.3)  # 100 of 300 gone: above the 20% guard
    site.ingestion.run_cycle("services")
    assert store.count_entities("services") == 300
    page = log_in(tab)
    card = page.get_by_role("article", name="services")
    expect(card).to_contain_text("100 removals held back")
    card.get_by_role("link", name="Review services").click()

    section = page.get_by_role("region", name="Removals held back")
    held = section.get_by_role("table", name="Held-back entities")
    expect(held.get_by_role("row").nth(1)).to_contain_text("component:default/service-0000000")
    # Going back from the question removes nothing.
    section.get_by_role("button", name="Remove 100 entities now").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete the 100 entities the guard held back")
    dialog.get_by_role("button", name="Go back").click()
    assert store.count_entities("services") == 300

    confirm_dialog(page, "Remove 100 entities now", "cannot be undone")
    expect(page.locator("#status")).to_contain_text("100 held-back entities removed")
    expect(section).to_be_hidden()
    assert store.count_entities("services") == 200
    assert store.status("services").blocked_sweep is None
    assert set(site.ingestion.catalog.refs("services")) == site.source.refs()

    # Held back again, and this time kept.
    site.source.drop(0.3, salt=1)
    site.ingestion.run_cycle("services")
    blocked = store.status("services").blocked_sweep
    assert blocked is not None
    expect(section).to_be_visible(timeout=10_000)  # the page refreshes by itself
    confirm_dialog(page, "Keep them and clear the block", "counted as seen")
    expect(page.locator("#status")).to_contain_text(f"{blocked['count']} held-back entities kept")
    expect(section).to_be_hidden()
    assert store.count_entities("services") == 200
    assert store.status("services").blocked_sweep is None


# -- the catalog ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_catalog_search_pages_through_matches_and_opens_an_entity(tab: Tab, site: Site) -> None:
    site.ingestion.run_cycle("services")
    page = log_in(tab)
    page.get_by_role("navigation").get_by_role("link", name="Catalog").click()
    page.get_by_label("Ref or name contains").fill("service-00001")
    page.get_by_label("Kind").fill("component")
    page.get_by_label("Provider").select_option("services")
    page.get_by_role("button", name="Search").click()

    results = page.get_by_role("table", name="Entities")
    expect(results.get_by_role("row")).to_have_count(26)
    expect(page.get_by_text("Entities 1 to 25")).to_be_visible()
    expect(results.get_by_role("row").nth(1)).to_contain_text("component:default/service-0000100")
    tab.screenshot("catalog")
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text("Entities 26 to 50")).to_be_visible()
    expect(results.get_by_role("row").nth(1)).to_contain_text("service-0000125")
    for _ in range(2):
        page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text("Entities 76 to 100 (the last page)")).to_be_visible()
    expect(page.get_by_role("button", name="Next page")).to_have_count(0)
    page.get_by_role("button", name="Previous page").click()
    expect(page.get_by_text("Entities 51 to 75")).to_be_visible()

    page.get_by_role("link", name="component:default/service-0000160").click()
    expect(page.get_by_role("heading", name="component:default/service-0000160")).to_be_visible()
    cycle = site.ingestion.store.cycles("services")[0]
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(f"cycle #{cycle['id']} (completed, ended")
    expect(facts.get_by_role("link", name="services")).to_be_visible()
    expect(page.get_by_label("JSON of component:default/service-0000160")).to_contain_text(
        '"name": "service-0000160"'
    )

    page.get_by_role("navigation").get_by_role("link", name="Catalog").click()
    page.get_by_label("Ref or name contains").fill("no-such-thing")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No entity matches.")).to_be_visible()


# -- keyboard and labels -------------------------------------------------------------------

UNLABELLED = """() => [...document.querySelectorAll('a, button, input, select, [tabindex]')]
  .filter((el) => el.offsetParent !== null || el.tagName === 'DIALOG')
  .filter((el) => {
    const named = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
      || (el.labels && el.labels.length) || (el.textContent || '').trim();
    return !named;
  })
  .map((el) => el.outerHTML.slice(0, 120))"""


@pytest.mark.timeout(90)
def test_keyboard_reaches_and_activates_the_controls_and_each_has_a_name(
    tab: Tab, site: Site
) -> None:
    history(site)
    page = log_in(tab)
    expect(page.locator("main h1")).to_be_focused()  # the view is drawn: focus is on its title
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Overview").focus()
    reached: list[str] = ["Overview"]
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "() => { const el = document.activeElement;"
                " return el.getAttribute('aria-label') || el.textContent.trim(); }"
            )
        )
        if reached[-1] == "Trigger services":
            break
    for control in ("Overview", "Catalog", "Log out", "broken", "Start broken", "services"):
        assert control in reached, reached
    assert reached[-1] == "Trigger services", reached

    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Go back")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Trigger services")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("the pending step is due now")

    for path in (
        "/#/",
        "/#/providers/services",
        "/#/catalog?q=service",
        "/#/entities/component%3Adefault%2Fservice-0000001",
    ):
        tab.open(path)
        expect(page.locator("main h1")).to_be_focused()
        assert page.evaluate(UNLABELLED) == [], path
    tab.open("/#/providers/services")
    expect(page.get_by_role("combobox", name="Rule")).to_be_visible()
    expect(page.get_by_role("button", name="Remove 100 entities now")).to_be_visible()


# -- a provider's secrets ------------------------------------------------------------------

SOURCE_TOKEN = "src-tok-5e1d9a3c7b0f2e4d6a8c"  # made up; must never reach the page
ITEM: dict[str, Any] = {
    "metadata": {"name": "{slug}", "description": "{summary}"},
    "spec": {"type": "service", "owner": "group:{team.name}", "lifecycle": "production"},
}


@pytest.mark.timeout(120)
def test_no_page_shows_a_providers_token(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source whose token goes in the query string (and comes back in its Link headers),
    with a failed burst whose error names the URL: neither the pages nor anything the browser
    receives holds the token."""
    monkeypatch.setenv("TEST_WEB_SOURCE_TOKEN", SOURCE_TOKEN)
    ingestion = IncrementalIngestion(settings=site_settings(tmp_path))
    with ItemsApi(count=60, per_page=20, token=SOURCE_TOKEN) as api:
        auth = TokenAuth("TEST_WEB_SOURCE_TOKEN", query_param="api_key")
        source = HttpProvider(
            "items", api.url + "/link", items="data.items", pagination=LinkHeader(),
            entity=EntityTemplate(ITEM), auth=auth,
        )  # fmt: skip
        ingestion.add_provider(source, **{**FAST, "page_retries": 0})
        ingestion.run_cycle("items")
        doorbell = ingestion.store.start("items")
        api.canned.append(Answer(503, {"message": "maintenance"}))
        ingestion.engine.run_step("items", doorbell.ticket, "t/1")
    assert "api_key=***" in (ingestion.store.status("items").last_error or "")

    received: list[str] = []
    with serve(create_api(ingestion, admin_token=TOKEN)) as url:
        tab = open_tab(browser, url)
        try:
            tab.page.on("response", lambda response: received.append(_body(response)))
            page = log_in(tab)
            for path, masked in (("/#/", 1), ("/#/providers/items", 1), ("/#/catalog", 0)):
                tab.open(path)
                expect(page.locator("main h1")).to_be_focused()
                page.wait_for_load_state("networkidle")
                if masked:  # the failed burst's error, the URL's token masked
                    expect(page.get_by_text("api_key=***").first).to_be_visible()
                assert SOURCE_TOKEN not in page.content(), path
        finally:
            tab.context.close()
    ingestion.store.dispose()
    assert any("api_key=***" in body for body in received), "the API's answers were read"
    assert not [body for body in received if SOURCE_TOKEN in body]
    assert tab.problems == []


def _body(response: Response) -> str:
    try:
        return response.text()
    except Exception:  # a redirect or an aborted request has no body to read
        return ""
