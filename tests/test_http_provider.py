"""The paginated HTTP/JSON provider against a made-up API on 127.0.0.1, on SQLite and Postgres."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ingestion import Action
from ingestion.entities import entity_ref
from ingestion.errors import ProviderConfigError, RetryAfter
from ingestion.provider import DeferredEntity, RemovalCandidate
from providers.http import (
    EntityTemplate,
    HttpProvider,
    HttpSession,
    LinkHeader,
    NextCursor,
    OffsetLimit,
    PageNumber,
    Pagination,
    TokenAuth,
)
from tests.support.fake_apis import Answer, FakeServer, ItemsApi, refs
from tests.support.ingestions import burst_error, everything_stored, make_ingestion, one_burst

T = TypeVar("T")
TOKEN = "tok-7f3a9c1e5b2d4e6f8a0b"  # made up; must never show anywhere
TEMPLATE: dict[str, Any] = {
    "metadata": {
        "name": "{slug}",
        "description": "{summary}",
        "annotations": {"example.com/id": "{id}", "example.com/public": "{public}"},
        "tags": "{tags}",
    },
    "spec": {"type": "service", "owner": "group:{team.name}", "lifecycle": "production"},
}
STYLES: dict[str, tuple[str, Pagination]] = {
    "page numbers and total_pages": (
        "/page",
        PageNumber(size_param="per_page", size=20, total_pages="meta.pages"),
    ),
    "page numbers until an empty page": ("/page", PageNumber(size_param="per_page", size=20)),
    "offset and total": ("/offset", OffsetLimit(limit=20, total="total")),
    "offset until an empty page": ("/offset", OffsetLimit(limit=20)),
    "cursor in the body": ("/cursor", NextCursor(path="next", param="cursor")),
    "link header": ("/link", LinkHeader()),
}


def provider(
    api: FakeServer, path: str = "/link", pagination: Pagination | None = None, **kwargs: Any
) -> HttpProvider:
    kwargs.setdefault("entity", EntityTemplate(TEMPLATE))
    return HttpProvider(
        kwargs.pop("name", "services"),
        api.url + path,
        items="data.items",
        pagination=pagination or LinkHeader(),
        **kwargs,
    )


# -- pagination ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", list(STYLES))
def test_every_pagination_style_reads_the_whole_source_across_bursts(
    style: str, database_url: str, tmp_path: Path
) -> None:
    # Given 95 items, 20 a page, and bursts of one page each (the cursor crosses bursts)
    path, pagination = STYLES[style]
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=95, per_page=20) as api:
        ingestion.add_provider(
            provider(api, path, pagination), burst_length=0.001, burst_interval=0
        )

        # When a cycle runs
        reports = ingestion.run_cycle("services")

        # Then the catalog holds every item, read page after page
        assert refs(api.ids()) == set(ingestion.catalog.refs("services"))
        assert len(reports) >= 5 and reports[-1].outcome == "done"
        pages = api.seen(path)
        assert len(pages) in (5, 6)  # 6 when the end shows as an empty page
        assert ingestion.errors("services") == []


def test_page_numbers_send_the_page_and_size_parameters(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi(count=45) as api:
        pagination = PageNumber(size_param="per_page", size=20, total_pages="meta.pages")
        ingestion.add_provider(provider(api, "/page", pagination, params={"state": "active"}))
        ingestion.run_cycle("services")
        assert [r.query for r in api.seen("/page")] == [
            {"state": "active", "page": str(n), "per_page": "20"} for n in (1, 2, 3)
        ]


def test_items_become_entities_through_the_template(database_url: str, tmp_path: Path) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=10) as api:
        ingestion.add_provider(provider(api))
        ingestion.run_cycle("services")
    entity = ingestion.catalog.get("component:default/svc-0007")
    assert entity is not None
    body = entity.entity
    assert body["apiVersion"] == "backstage.io/v1alpha1"
    assert body["kind"] == "Component"
    assert body["metadata"]["description"] == "Service number 7"
    assert body["metadata"]["tags"] == ["made-up", "tier-1"]
    assert body["metadata"]["annotations"]["example.com/id"] == "7"
    assert body["metadata"]["annotations"]["example.com/public"] == "false"
    assert body["spec"] == {"type": "service", "owner": "group:team-2", "lifecycle": "production"}
    assert entity.location_key == f"url:{api.url}/link"


def test_a_second_cycle_after_deletions_at_the_source_sweeps_them(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=60) as api:
        ingestion.add_provider(provider(api, "/cursor", NextCursor("cursor", "next", "cursor")))
        ingestion.run_cycle("services")
        assert ingestion.catalog.count("services") == 60

        api.remove({3, 4, 30, 59})
        reports = ingestion.run_cycle("services")

        assert refs(api.ids()) == set(ingestion.catalog.refs("services"))
        assert ingestion.catalog.count("services") == 56
        assert reports[-1].sweep is not None and reports[-1].sweep.removed == 4


# -- the template -------------------------------------------------------------------------


def test_the_template_fills_defaults_formats_text_and_leaves_out_what_the_item_lacks() -> None:
    template = EntityTemplate(
        {
            "kind": "{kind}",
            "metadata": {
                "name": "{slug}",
                "title": "{{{slug}}} of {team.name}",
                "description": "{missing}",
                "labels": {"tier": "{tier}", "gone": "x-{missing}"},
                "links": [{"url": "{links.0}"}, "{links.5}"],
            },
        },
        api_version="example.com/v1",
        namespace="payments",
    )

    entity = template.render(
        {"slug": "a", "team": {"name": "t"}, "tier": 2, "links": ["https://x"], "kind": None}
    )

    assert entity == {
        "apiVersion": "example.com/v1",
        "kind": "Component",
        "metadata": {
            "name": "a",
            "namespace": "payments",
            "title": "{a} of t",
            "labels": {"tier": "2"},
            "links": [{"url": "https://x"}],
        },
    }


def test_the_template_can_make_names_valid() -> None:
    template = EntityTemplate({"metadata": {"name": "{n}"}}, make_names_valid=True)
    name = template.render({"n": "My Service!"})["metadata"]["name"]
    assert name.startswith("My-Service-")
    assert template.render({"n": "fine-name"})["metadata"]["name"] == "fine-name"


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ({"metadata": {"name": "{slug"}}, "entity.metadata.name: '{slug' has an unmatched"),
        ({"metadata": {"name": "{}"}}, "entity.metadata.name: '{}' has an unmatched or empty"),
        ({"spec": {"owner": "x"}}, "the template must set metadata.name"),
    ],
)
def test_an_invalid_template_is_refused_with_where(template: dict[str, Any], says: str) -> None:
    with pytest.raises(ProviderConfigError) as raised:
        EntityTemplate(template)
    assert says in str(raised.value)


def test_items_that_are_not_objects_are_rejected_alone(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi() as api:
        api.canned.append(
            Answer(body={"data": {"items": [{"slug": "ok-1"}, 42, {"slug": "ok-2"}]}})
        )
        ingestion.add_provider(provider(api))
        ingestion.run_cycle("services")
    assert set(ingestion.catalog.refs("services")) == {
        "component:default/ok-1",
        "component:default/ok-2",
    }
    [error] = ingestion.errors("services")
    assert error["entity"] == "item #1"
    assert "expected a JSON object, got int" in error["message"]


# -- secrets ------------------------------------------------------------------------------


def broker_messages(tmp_path: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in (tmp_path / "broker").rglob("*") if p.is_file()
    )


def test_a_bearer_token_from_the_environment_is_sent_and_shows_nowhere(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an API that wants a token, and the token in the environment only
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=50, token=TOKEN) as api:
        http = provider(api, auth=TokenAuth("TEST_API_TOKEN"))
        ingestion.add_provider(http, burst_length=0.001, burst_interval=0)

        # When a cycle runs, a failure is recorded, and the next cycle is announced
        ingestion.run_cycle("services")
        api.canned.append(Answer(502, {"message": "upstream gone"}))
        one_burst(ingestion, "services")
        ingestion.start("services")  # a real message in the file broker

    # Then every request carried it, and it is in no log, row, message or provider attribute
    assert {r.headers["authorization"] for r in api.requests} == {f"Bearer {TOKEN}"}
    assert ingestion.catalog.count("services") == 50
    assert "502 Bad Gateway" in burst_error(ingestion, "services")
    assert "HTTP Request: GET" in caplog.text  # the request log was captured
    assert TOKEN not in caplog.text
    assert TOKEN not in everything_stored(ingestion)
    assert broker_messages(tmp_path) and TOKEN not in broker_messages(tmp_path)
    assert TOKEN not in repr(vars(http))


def test_a_token_in_a_query_parameter_is_masked_in_logs_errors_and_cursors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an API whose token goes in ?api_key= and whose Link headers repeat it
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)
    caplog.set_level(logging.INFO, logger="httpx")
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi(count=50, token=TOKEN) as api:
        auth = TokenAuth("TEST_API_TOKEN", query_param="api_key")
        # page_retries=0: the 503 fails its burst, so that its error is stored
        ingestion.add_provider(
            provider(api, auth=auth), burst_length=0.001, burst_interval=0, page_retries=0
        )
        ingestion.store.ensure_providers(["services"])

        # When a burst reads a page, and the next one fails with a 503
        first = one_burst(ingestion, "services")
        api.canned.append(Answer(503, {"message": "maintenance"}))
        time.sleep(first.next.countdown)
        ingestion.engine.run_step("services", first.next.ticket, "test/1")

    # Then the server got the token, the stored cursor and error show the URL without it
    assert all(r.query.get("api_key") == TOKEN for r in api.requests)
    [mark] = ingestion.store.checkpoints("services")
    assert mark["cursor"] is not None and "after=" in mark["cursor"]
    assert "api_key" not in mark["cursor"]
    error = burst_error(ingestion, "services")
    assert f"GET {api.url}/link?after=" in error
    assert "api_key=***" in error
    assert "503 Service Unavailable: maintenance" in error
    assert "api_key=***" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN not in everything_stored(ingestion)


def test_a_missing_token_variable_parks_the_provider_naming_the_variable(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi() as api:
        ingestion.add_provider(
            provider(api, auth=TokenAuth("TEST_UNSET_TOKEN_VARIABLE")), backoff=[60]
        )
        report = one_burst(ingestion, "services")
        assert api.requests == []
    assert report.outcome == "failed"
    assert "the environment variable TEST_UNSET_TOKEN_VARIABLE that holds the token is unset" in (
        burst_error(ingestion, "services")
    )
    # Retrying cannot set the variable: the provider is parked, no backoff step spent
    status = ingestion.store.status("services")
    assert (status.action, status.attempts) == (Action.PARKED, 0)


def test_a_401_says_the_token_was_refused(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_API_TOKEN", "not-the-right-token")
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(token=TOKEN) as api:
        ingestion.add_provider(provider(api, auth=TokenAuth("TEST_API_TOKEN")))
        report = one_burst(ingestion, "services")
        # A refusal is not asked again: one request
        assert len(api.requests) == 1
    assert report.outcome == "failed"
    error = burst_error(ingestion, "services")
    assert "provider 'services'" in error
    assert f"GET {api.url}/link answered 401 Unauthorized: invalid credentials" in error
    assert "the server refused the token in TEST_API_TOKEN" in error
    assert "not-the-right-token" not in everything_stored(ingestion)
    # Retrying cannot fix a refused token: the provider is parked, with the error in its status
    status = ingestion.store.status("services")
    assert (status.action, status.attempts) == (Action.PARKED, 0)
    assert "the server refused the token in TEST_API_TOKEN" in (status.last_error or "")


# -- failures -----------------------------------------------------------------------------


def test_a_5xx_goes_to_backoff_with_url_status_and_what_the_server_said(
    database_url: str, tmp_path: Path
) -> None:
    # Given an API that answers 502 once, and a burst that does not ask again
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=30) as api:
        api.canned.append(Answer(502, {"message": "bad gateway: upstream timed out"}))
        ingestion.add_provider(provider(api), backoff=[0.01, 60], page_retries=0)

        # When the first burst runs
        report = one_burst(ingestion, "services")

        # Then it failed with a message that says provider, URL, status and the server's words
        assert report.outcome == "failed"
        error = burst_error(ingestion, "services")
        assert error.startswith("provider 'services', cycle ")
        assert (
            f"SourceUnavailable: GET {api.url}/link answered 502 Bad Gateway: "
            "bad gateway: upstream timed out"
        ) in error
        status = ingestion.store.status("services")
        assert (status.action, status.attempts) == (Action.BACKOFF, 1)

        # And the backoff burst reads the source
        time.sleep(report.next.countdown)
        done = ingestion.engine.run_step("services", report.next.ticket, "test/1")
        assert done.outcome == "done"
        assert ingestion.catalog.count("services") == 30


def test_a_5xx_once_is_asked_again_in_the_same_burst_which_goes_on(tmp_path: Path) -> None:
    # Given an API that answers 502 once, and the default page_retries
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi(count=30) as api:
        api.canned.append(Answer(502, {"message": "bad gateway: upstream timed out"}))
        ingestion.add_provider(provider(api), backoff=[60])

        # When the first burst runs
        report = one_burst(ingestion, "services")

        # Then the page was asked for again at once, and the burst read the whole source
        assert report.outcome == "done" and report.pages > 0
        assert [r.path for r in api.requests[:2]] == ["/link", "/link"]
        assert api.requests[0].query == api.requests[1].query
    assert ingestion.catalog.count("services") == 30
    assert ingestion.errors("services") == []
    assert ingestion.store.status("services").attempts == 0


def test_a_refused_connection_is_a_transient_error_naming_the_url(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    ingestion.add_provider(
        HttpProvider(
            "services", f"http://127.0.0.1:{port}/v1/items", entity=EntityTemplate(TEMPLATE)
        )
    )
    report = one_burst(ingestion, "services")
    assert report.outcome == "failed"
    error = burst_error(ingestion, "services")
    assert f"SourceUnavailable: GET http://127.0.0.1:{port}/v1/items: ConnectError" in error
    assert ingestion.store.status("services").action is Action.BACKOFF


def test_a_server_that_does_not_answer_in_time_is_a_timeout(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi() as api:
        api.canned.append(Answer(body={"data": {"items": []}}, delay=10.0))
        ingestion.add_provider(provider(api, timeout=0.3), page_retries=0)
        started = time.monotonic()
        report = one_burst(ingestion, "services")
        assert time.monotonic() - started < 5, "the burst did not wait for the answer"
    assert report.outcome == "failed"
    assert f"GET {api.url}/link: no answer in time (ReadTimeout, timeout 0.3s)" in burst_error(
        ingestion, "services"
    )


def test_a_429_with_retry_after_waits_without_spending_backoff(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi(count=40) as api:
        api.canned.append(Answer(429, {"message": "slow down"}, {"Retry-After": "1"}))
        ingestion.add_provider(provider(api), backoff=[100])
        started = time.monotonic()
        reports = ingestion.run_cycle("services")
    assert time.monotonic() - started < 20
    assert [r.outcome for r in reports] == ["waiting", "done"]
    assert "429 Too Many Requests: slow down" in (reports[0].reason or "")
    assert ingestion.catalog.count("services") == 40
    assert ingestion.errors("services") == []


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            Answer(raw=b"<html>oops</html>", headers={"Content-Type": "text/html"}),
            "a body that is not JSON (text/html): <html>oops</html>",
        ),
        (Answer(body={"results": []}), "expected a list of items at 'data.items', found nothing"),
        (
            Answer(body={"data": {"items": {"a": 1}}}),
            "expected a list of items at 'data.items', found dict",
        ),
        (Answer(404, {"message": "Not Found"}), "answered 404 Not Found: Not Found"),
        (
            Answer(301, None, {"Location": "https://elsewhere.example/v2"}),
            "redirected to https://elsewhere.example/v2",
        ),
    ],
)
def test_a_body_or_status_the_provider_cannot_use_fails_with_what_came(
    answer: Answer, says: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi() as api:
        api.canned.append(answer)  # answered once: with page_retries=0 the burst fails on it
        ingestion.add_provider(provider(api), page_retries=0)
        assert one_burst(ingestion, "services").outcome == "failed"
    error = burst_error(ingestion, "services")
    assert f"GET {api.url}/link" in error
    assert says in error


def test_a_next_link_to_another_origin_is_not_followed(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi() as api, FakeServer() as elsewhere:
        link = f'<{elsewhere.url}/steal?page=2>; rel="next"'
        api.canned.append(Answer(body={"data": {"items": []}}, headers={"Link": link}))
        ingestion.add_provider(provider(api), page_retries=0)
        assert one_burst(ingestion, "services").outcome == "failed"
        assert elsewhere.requests == []
    assert (
        f"the next page {elsewhere.url}/steal?page=2 is not on {api.url}; refusing to follow it"
        in burst_error(ingestion, "services")
    )


def test_a_next_cursor_that_repeats_is_an_error_not_a_loop(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi() as api:
        for _ in range(2):
            api.canned.append(Answer(body={"data": {"items": []}, "next": "same"}))
        ingestion.add_provider(
            provider(api, "/cursor", NextCursor("cursor", "next", "cursor")), page_retries=0
        )
        assert one_burst(ingestion, "services").outcome == "failed"
    assert "the next page is this page again ({'cursor': 'same'}); stopping" in burst_error(
        ingestion, "services"
    )


def test_a_total_that_is_not_a_number_says_where_it_looked(tmp_path: Path) -> None:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    with ItemsApi() as api:
        api.canned.append(Answer(body={"data": {"items": [{"slug": "a"}]}, "total": "many"}))
        ingestion.add_provider(provider(api, "/offset", OffsetLimit(total="total")), page_retries=0)
        assert one_burst(ingestion, "services").outcome == "failed"
    assert "total: expected a number at 'total' in the body, found str" in burst_error(
        ingestion, "services"
    )


# -- removal checks and grace cycles --------------------------------------------------------


def in_burst(http: HttpProvider, work: Callable[[HttpSession], T]) -> T:
    """Run ``work`` inside one burst's ``around()``, with the context ``next()`` gets."""
    out: list[T] = []
    http.around(lambda context: out.append(work(context)))
    return out[0]


def read_all(http: HttpProvider, context: HttpSession) -> list[DeferredEntity]:
    """Every entity of a whole cycle, read with ``next()`` as the engine reads it."""
    entities: list[DeferredEntity] = []
    cursor = None
    for _ in range(1000):
        page = http.next(context, cursor)
        entities += page.entities
        if page.done:
            return entities
        cursor = page.cursor
    raise AssertionError("the cycle did not end")


def as_candidate(deferred: DeferredEntity) -> RemovalCandidate:
    metadata = deferred.entity["metadata"]
    ref = entity_ref(deferred.entity["kind"], metadata.get("namespace"), metadata["name"])
    return RemovalCandidate(ref, deferred.entity, deferred.location_key)


def listed_candidates(http: HttpProvider, numbers: tuple[int, ...]) -> list[RemovalCandidate]:
    """The removal candidates the items at ``numbers`` of a whole cycle of ``http`` make."""
    entities = in_burst(http, lambda context: read_all(http, context))
    return [as_candidate(entities[n]) for n in numbers]


def checked(api: ItemsApi, **kwargs: Any) -> HttpProvider:
    kwargs.setdefault("item_url", api.url + "/items/{id}")
    kwargs.setdefault("item_path", "item")
    return provider(api, "/page", PageNumber(size_param="per_page", size=20), **kwargs)


@pytest.mark.timeout(60)
def test_with_item_url_each_entity_is_located_at_its_own_url(tmp_path: Path) -> None:
    with ItemsApi(count=5) as api:
        http = checked(api)
        entities = in_burst(http, lambda context: read_all(http, context))
    assert [e.location_key for e in entities] == [f"url:{api.url}/items/{n}" for n in range(5)]


@pytest.mark.timeout(60)
def test_removal_checks_get_each_item_url_404_is_gone_200_is_present(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given 30 items read once, then: two deleted, one given another name, one the server
    # cannot answer for
    caplog.set_level(logging.INFO, logger="providers.http")
    with ItemsApi(count=30) as api:
        http = checked(api)
        candidates = listed_candidates(http, (3, 4, 7, 9, 12))
        api.remove({3, 4})
        api.rename(7, "svc-seven")
        before = len(api.requests)
        api.at[before + 4] = Answer(503, {"message": "maintenance"})

        # When the provider checks five candidates
        check = in_burst(http, lambda context: http.check_removals(context, candidates))

        # Then the deleted ones are gone; the renamed one is gone under its old name and
        # present under its new one; the one still there is present; the 503 one is kept
        assert set(check.gone) == refs([3, 4, 7])
        assert [e.entity["metadata"]["name"] for e in check.present] == ["svc-seven", "svc-0012"]
        assert check.present[0].location_key == f"url:{api.url}/items/7"
        assert [r.path for r in api.requests[before:]] == [f"/items/{n}" for n in (3, 4, 7, 9, 12)]
    assert "kept component:default/svc-0009 for this cycle: GET " in caplog.text
    assert "answered 503 Service Unavailable: maintenance" in caplog.text


@pytest.mark.timeout(60)
def test_removal_checks_follow_redirects_on_the_origin_to_the_items_new_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given 30 items read once, then: one renamed and moved (301), one moved under its name
    # (308), one redirected to another origin, one redirected in a loop
    caplog.set_level(logging.WARNING, logger="providers.http")
    with ItemsApi(count=30) as api:
        http = checked(api)
        candidates = listed_candidates(http, (7, 9, 12, 14))
        api.rename(7, "svc-seven")
        api.move(7, 107)
        api.move(9, 109, status=308)
        before = len(api.requests)
        api.at[before + 5] = Answer(302, {}, {"Location": "https://collector.example/items/12"})
        for n in range(6, 10):
            api.at[before + n] = Answer(307, {}, {"Location": "/items/14"})

        # When the provider checks the four candidates
        check = in_burst(http, lambda context: http.check_removals(context, candidates))

        # Then the renamed item is gone under its old name and present under its new one, at
        # its new URL; the one moved under its name is present at its new URL; the two
        # redirects not followed keep their candidates
        assert set(check.gone) == refs([7])
        assert [(e.entity["metadata"]["name"], e.location_key) for e in check.present] == [
            ("svc-seven", f"url:{api.url}/items/107"),
            ("svc-0009", f"url:{api.url}/items/109"),
        ]
        assert [r.path for r in api.requests[before:]] == [
            "/items/7",
            "/items/107",
            "/items/9",
            "/items/109",
            "/items/12",
            *["/items/14"] * 4,
        ]
    assert "kept component:default/svc-0012 for this cycle: GET " in caplog.text
    assert "the redirect to https://collector.example/items/12 is not on " in caplog.text
    assert "kept component:default/svc-0014 for this cycle: GET " in caplog.text
    assert "more than 3 redirects in a row" in caplog.text


@pytest.mark.timeout(60)
def test_a_candidate_without_its_own_url_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="providers.http")
    with ItemsApi(count=5) as api:
        plain = provider(api, "/page", PageNumber())
        listed = in_burst(plain, lambda context: read_all(plain, context))
        http = checked(api)
        check = in_burst(
            http, lambda context: http.check_removals(context, [as_candidate(listed[0])])
        )
        assert [r.path for r in api.requests if r.path.startswith("/items/")] == []
    assert (list(check.gone), list(check.present)) == ([], [])
    assert "no item URL to ask the source about it" in caplog.text


@pytest.mark.timeout(60)
def test_a_429_during_removal_checks_asks_to_wait() -> None:
    with ItemsApi(count=10) as api:
        http = checked(api)
        candidates = listed_candidates(http, (1, 2, 3))
        api.remove({1, 2, 3})
        api.at[len(api.requests) + 2] = Answer(429, {"message": "slow down"}, {"Retry-After": "30"})
        with pytest.raises(RetryAfter) as raised:
            in_burst(http, lambda context: http.check_removals(context, candidates))
        # The batch stops at the 429 rather than keeping the rest for a whole cycle; the
        # engine asks about it again after the wait
        assert [r.path for r in api.requests[-2:]] == ["/items/1", "/items/2"]
        assert raised.value.seconds == 30
        assert "429 Too Many Requests: slow down" in raised.value.reason


@pytest.mark.timeout(120)
def test_a_429_in_the_checking_phase_resumes_the_checks_after_the_wait(
    database_url: str, tmp_path: Path
) -> None:
    # Given a catalog of 10 items, three since removed, checked one a batch
    ingestion = make_ingestion(database_url, tmp_path)
    with ItemsApi(count=10) as api:
        ingestion.add_provider(checked(api), burst_interval=0, backoff=[100], removal_check_batch=1)
        ingestion.run_cycle("services")
        pages = len(api.requests)  # a first cycle has nothing to check
        api.remove({1, 2, 3})
        # And a 429 on the second check (after the cycle's pages and /items/1: /items/2)
        api.at[2 * pages + 2] = Answer(429, {"message": "slow down"}, {"Retry-After": "1"})

        reports = ingestion.run_cycle("services")

        # Then the checks waited (no failure, no backoff) and resumed where they stopped
        assert [r.outcome for r in reports] == ["continued", "waiting", "done"]
        assert (reports[1].checked, reports[2].checked) == (1, 2)
        assert reports[1].next is not None and reports[1].next.action is Action.CHECK
        assert reports[-1].sweep is not None and reports[-1].sweep.removed == 3
        assert set(ingestion.catalog.refs("services")) == refs([0, *range(4, 10)])
        assert [r.path for r in api.requests[2 * pages :]] == [
            "/items/1",
            "/items/2",
            "/items/2",
            "/items/3",
        ]
    assert ingestion.store.status("services").attempts == 0
    assert ingestion.errors("services") == []


@pytest.mark.parametrize(
    ("pagination", "item_url", "options"),
    [
        (PageNumber(), None, {"remove_after_missed_cycles": 2}),
        (OffsetLimit(), None, {"remove_after_missed_cycles": 2}),
        (PageNumber(), "/items/{id}", {}),
        (OffsetLimit(), "/items/{id}", {}),
        (NextCursor(), None, {}),
        (LinkHeader(), None, {}),
    ],
)
def test_page_and_offset_styles_ask_for_two_grace_cycles_unless_removals_are_checked(
    pagination: Pagination, item_url: str | None, options: dict[str, Any]
) -> None:
    base = "https://api.example.com/v1/items"
    http = HttpProvider(
        "s",
        base,
        entity=EntityTemplate(TEMPLATE),
        pagination=pagination,
        item_url=base + item_url if item_url else None,
    )
    assert dict(http.default_options()) == options


@pytest.mark.parametrize(
    ("item_url", "says"),
    [
        ("https://elsewhere.example/items/{id}", "must start with https://api.example.com/"),
        ("https://api.example.com/items/all", "must hold a placeholder such as {id}"),
    ],
)
def test_an_item_url_elsewhere_or_without_a_placeholder_is_refused(
    item_url: str, says: str
) -> None:
    with pytest.raises(ProviderConfigError) as raised:
        HttpProvider(
            "s",
            "https://api.example.com/items",
            entity=EntityTemplate(TEMPLATE),
            item_url=item_url,
        )
    assert says in str(raised.value)


def test_item_url_values_are_percent_encoded() -> None:
    http = HttpProvider(
        "s",
        "https://api.example.com/items",
        entity=EntityTemplate(TEMPLATE),
        item_url="https://api.example.com/items/{slug}?v=1",
    )
    assert http._location({"slug": "a b/c"}) == "url:https://api.example.com/items/a%20b%2Fc?v=1"
    assert http._location({}) == "url:https://api.example.com/items"
