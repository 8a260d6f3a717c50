"""The GitHub repositories provider against a GitHub lookalike on 127.0.0.1.

The fake serves GitHub's GraphQL connection of an organisation's repositories and its REST
repository endpoints with GitHub's header forms (request ids, rate-limit headers, weak ETags,
301 for renamed repositories), counts its rate limit down for real, and can answer any request
with a 401, 403, 429 or 502.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ingestion import Action, CycleStatus, IncrementalIngestion
from ingestion.engine import BurstReport
from ingestion.entities import valid_name
from ingestion.errors import RetryAfter, SourceRefused
from ingestion.provider import RemovalCandidate
from ingestion.store import Doorbell
from providers._http import SourceError, TokenRefused
from providers._names import entity_name
from providers.github import (
    MAX_WAIT,
    GitHubProvider,
    GitHubSession,
    graphql_url,
    repository_entity,
)
from tests.support.fake_apis import Answer, GitHubApi, expected_refs, make_repo
from tests.support.ingestions import burst_error, everything_stored, make_ingestion, one_burst

TOKEN = "ghp_madeUpToken0123456789abcdefABCDEF"
TOKEN_ENV = "TEST_GITHUB_TOKEN"
T = TypeVar("T")


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def github(api: GitHubApi, **kwargs: Any) -> GitHubProvider:
    return GitHubProvider("acme-repos", "acme", token_env=TOKEN_ENV, api_url=api.url, **kwargs)


def sqlite(tmp_path: Path) -> IncrementalIngestion:
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    return ingestion


def rate_limited(seconds: float, status: int = 403) -> Answer:
    reset = int(time.time() + seconds + 0.999)
    return Answer(
        status,
        {"message": "API rate limit exceeded for user ID 1."},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset), "X-RateLimit-Limit": "60"},
    )


# -- a whole organisation -----------------------------------------------------------------


def graphql_variables(api: GitHubApi) -> list[dict[str, Any]]:
    return [json.loads(r.body)["variables"] for r in api.seen("/graphql")]


def test_a_cycle_reads_every_repository_100_a_page_by_graphql_connection_cursors(
    database_url: str, tmp_path: Path, token: str
) -> None:
    # Given an organisation of 250 repositories
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=250, token=token) as api:
        ingestion.add_provider(github(api), burst_length=0.001, burst_interval=0)

        # When a cycle runs, one page a burst
        reports = ingestion.run_cycle("acme-repos")

        # Then three pages were asked for, oldest repositories first, each after the last
        # page's endCursor (which crossed bursts in the engine's cursor), and a fourth burst
        # checked the removal candidates (none in a first cycle, so it asked GitHub nothing)
        requests = api.seen("/graphql")
        variables = graphql_variables(api)
        assert [v["first"] for v in variables] == [100, 100, 100]
        assert variables[0]["after"] is None and variables[0]["login"] == "acme"
        assert all(v["after"] for v in variables[1:])
        query = json.loads(requests[0].body)["query"]
        assert "orderBy: {field: CREATED_AT, direction: ASC}" in query
        assert {r.method for r in requests} == {"POST"}
        assert {r.headers["authorization"] for r in requests} == {f"Bearer {token}"}
        assert [r.pages for r in reports] == [1, 1, 1, 0]
        assert reports[-1].outcome == "done" and reports[-1].checked == 0
        assert len(api.requests) == 3
        # And the catalog is the organisation
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)
        assert ingestion.errors("acme-repos") == []


def test_each_repository_becomes_a_component_with_slug_description_tags_and_archival(
    tmp_path: Path, token: str
) -> None:
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=30, token=token) as api:
        ingestion.add_provider(github(api, owner="group:platform"))
        ingestion.run_cycle("acme-repos")

    plain = ingestion.catalog.get("component:default/repo-0005")
    assert plain is not None
    metadata = plain.entity["metadata"]
    assert metadata["description"] == "Repository 5"
    assert metadata["annotations"]["github.com/project-slug"] == "acme/repo-0005"
    assert metadata["tags"] == ["backend", "team-2"]
    assert plain.entity["spec"] == {
        "type": "service",
        "lifecycle": "production",
        "owner": "group:platform",
    }

    archived = ingestion.catalog.get("component:default/repo-0014")
    assert archived is not None
    assert archived.entity["spec"]["lifecycle"] == "deprecated"
    assert "archived" in archived.entity["metadata"]["tags"]
    assert archived.entity["metadata"]["annotations"]["github.com/archived"] == "true"

    odd = entity_name(".Odd..Name_13--")
    renamed = ingestion.catalog.get(f"component:default/{odd}")
    assert renamed is not None
    assert renamed.entity["metadata"]["title"] == ".Odd..Name_13--"
    assert renamed.entity["metadata"]["annotations"]["github.com/project-slug"] == (
        "acme/.Odd..Name_13--"
    )


def test_archived_repositories_can_be_left_out(tmp_path: Path, token: str) -> None:
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=30, token=token) as api:
        ingestion.add_provider(github(api, include_archived=False))
        ingestion.run_cycle("acme-repos")
    assert ingestion.catalog.count("acme-repos") == 30 - 5  # 0, 7, 14, 21, 28
    assert ingestion.catalog.get("component:default/repo-0007") is None


def test_a_second_cycle_after_repositories_are_deleted_sweeps_them(
    database_url: str, tmp_path: Path, token: str
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=150, token=token) as api:
        ingestion.add_provider(github(api))
        ingestion.run_cycle("acme-repos")
        assert ingestion.catalog.count("acme-repos") == 150

        api.remove({"repo-0001", "repo-0100", "repo-0149"})
        reports = ingestion.run_cycle("acme-repos")

        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)
        assert reports[-1].sweep is not None and reports[-1].sweep.removed == 3


# -- rate limits --------------------------------------------------------------------------


def test_a_403_rate_limit_stops_the_burst_and_waits_for_the_reset_not_the_backoff(
    database_url: str, tmp_path: Path, token: str
) -> None:
    # Given a rate limit that refuses the second page until 2 s from now, and a 100 s backoff
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=250, token=token) as api:
        api.at[2] = rate_limited(2)
        ingestion.add_provider(github(api), burst_length=60, burst_interval=0, backoff=[100])

        # When the cycle runs
        started = time.monotonic()
        reports = ingestion.run_cycle("acme-repos")

        # Then the first burst kept its page and stopped; the next one came after the reset
        # and read the rest; the last burst was the (empty) checking phase
        assert time.monotonic() - started < 15
        assert [r.outcome for r in reports] == ["waiting", "continued", "done"]
        assert reports[0].pages == 1
        assert reports[0].next is not None and 1 <= reports[0].next.countdown <= 4
        reason = reports[0].reason or ""
        assert "GitHub rate limit: POST " in reason and "X-GitHub-Request-Id: " in reason
        assert "403 Forbidden: API rate limit exceeded" in reason and "resets at" in reason
        requests = api.seen("/graphql")
        assert requests[2].at - requests[1].at >= 1.0
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)
        assert ingestion.errors("acme-repos") == []
        assert ingestion.store.status("acme-repos").last_error is None


def test_when_a_page_spends_the_last_request_the_next_waits_for_the_reset_without_asking(
    tmp_path: Path, token: str
) -> None:
    # Given one request left until 2 s from now (the fake counts for real)
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=250, token=token) as api:
        api.limit_for(2, remaining=1)
        ingestion.add_provider(github(api), burst_length=60, burst_interval=0, backoff=[100])

        reports = ingestion.run_cycle("acme-repos")

        # Then no request was refused: the second waited for the reset
        requests = api.seen("/graphql")
        assert len(requests) == 3
        assert requests[1].at >= api.resets[0]
        assert [r.outcome for r in reports] == ["waiting", "continued", "done"]
        assert "GitHub rate limit spent; it resets at" in (reports[0].reason or "")
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)


def test_a_429_with_retry_after_waits_that_long(tmp_path: Path, token: str) -> None:
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=150, token=token) as api:
        api.at[2] = Answer(429, {"message": "Too many requests"}, {"Retry-After": "1"})
        ingestion.add_provider(github(api), burst_length=60, burst_interval=0, backoff=[100])
        reports = ingestion.run_cycle("acme-repos")
    assert [r.outcome for r in reports] == ["waiting", "continued", "done"]
    assert reports[0].next is not None and 0 < reports[0].next.countdown <= 1
    assert ingestion.catalog.count("acme-repos") == 150


def test_a_retry_after_date_and_a_secondary_limit_without_headers_are_waited_for(
    tmp_path: Path, token: str
) -> None:
    ingestion = sqlite(tmp_path)
    with GitHubApi(token=token) as api:
        when = datetime.now(UTC) + timedelta(seconds=30)
        api.at[1] = Answer(
            403, {"message": "slow"}, {"Retry-After": format_datetime(when, usegmt=True)}
        )
        ingestion.add_provider(github(api), backoff=[1000])
        dated = one_burst(ingestion, "acme-repos")
        assert dated.outcome == "waiting"
        assert 25 <= dated.next.countdown <= 31

        api.at[2] = Answer(
            403, {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
        )
        secondary = one_burst(ingestion, "acme-repos")
        assert secondary.outcome == "waiting"
        assert 55 <= secondary.next.countdown <= 60
    status = ingestion.store.status("acme-repos")
    assert (status.action, status.attempts) == (Action.INGEST, 0)


def test_the_wait_is_measured_on_the_servers_clock_not_the_workers(
    tmp_path: Path, token: str
) -> None:
    # Given a server whose clock is two hours behind ours, resetting 20 s after its own now
    ingestion = sqlite(tmp_path)
    server_now = time.time() - 2 * 3600
    with GitHubApi(token=token) as api:
        api.at[1] = Answer(
            403,
            {"message": "API rate limit exceeded"},
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(server_now) + 20)},
            date=server_now,
        )
        ingestion.add_provider(github(api))
        report = one_burst(ingestion, "acme-repos")
    # Then the provider waits about 20 s, not zero (our clock is past the reset)
    assert report.outcome == "waiting"
    assert 18 <= report.next.countdown <= 23


def test_a_reset_too_far_away_is_not_believed(tmp_path: Path, token: str) -> None:
    ingestion = sqlite(tmp_path)
    with GitHubApi(token=token) as api:
        api.at[1] = rate_limited(10 * 24 * 3600)
        ingestion.add_provider(github(api))
        report = one_burst(ingestion, "acme-repos")
    assert report.outcome == "waiting"
    assert MAX_WAIT - 5 <= report.next.countdown <= MAX_WAIT


# -- failures -----------------------------------------------------------------------------


def test_a_502_goes_through_the_backoff_and_the_error_says_what_the_server_said(
    database_url: str, tmp_path: Path, token: str
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=150, token=token) as api:
        api.at[2] = Answer(502, {"message": "Server Error"})
        # page_retries=0: the 502 fails its burst rather than being asked again in it
        ingestion.add_provider(
            github(api), burst_length=60, burst_interval=0, backoff=[0.01], page_retries=0
        )
        reports = ingestion.run_cycle("acme-repos")
        assert [r.outcome for r in reports] == ["failed", "continued", "done"]
        error = burst_error(ingestion, "acme-repos")
        assert error.startswith("provider 'acme-repos', cycle ")
        assert (
            f"SourceUnavailable: POST {api.url}/graphql answered 502 Bad Gateway: Server Error "
            f"(X-GitHub-Request-Id: {api.request_ids[1]})"
        ) in error
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)


def test_a_401_leaves_a_last_error_that_says_the_token_was_refused(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "ghp_expiredTokenValue000")
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(token=TOKEN) as api:
        ingestion.add_provider(github(api), backoff=[60])
        report = one_burst(ingestion, "acme-repos")
        assert len(api.requests) == 1  # a refusal is not asked again
    assert report.outcome == "failed"
    # Retrying cannot fix the token: the provider is parked, no backoff step spent
    status = ingestion.store.status("acme-repos")
    assert (status.action, status.attempts) == (Action.PARKED, 0)
    last_error = status.last_error or ""
    assert "TokenRefused: POST " in last_error
    assert (
        f"answered 401 Unauthorized: Bad credentials (X-GitHub-Request-Id: {api.request_ids[0]})"
        "; the server refused the token in "
    ) in last_error
    assert TOKEN_ENV in last_error
    assert "ghp_expiredTokenValue000" not in everything_stored(ingestion)


def test_the_token_shows_in_no_log_and_no_stored_row(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=120, token=token) as api:
        api.at[2] = Answer(500, {"message": f"echoing your header: Bearer {token}"})
        # page_retries=0: the 500 fails its burst, so that its message is stored
        ingestion.add_provider(github(api), burst_interval=0, backoff=[0.01], page_retries=0)
        ingestion.run_cycle("acme-repos")
    assert "HTTP Request: POST" in caplog.text
    assert "echoing your header: Bearer ***" in burst_error(ingestion, "acme-repos")
    assert token not in caplog.text
    assert token not in everything_stored(ingestion)


# -- a source that changes while a cycle reads it ----------------------------------------


def in_burst(provider: GitHubProvider, work: Callable[[GitHubSession], T]) -> T:
    """Run ``work`` inside one burst's ``around()``, with the context ``next()`` gets."""
    out: list[T] = []
    provider.around(lambda context: out.append(work(context)))
    return out[0]


def read_all(provider: GitHubProvider, context: GitHubSession) -> list[str]:
    """The names of a whole cycle's pages, read with ``next()`` as the engine would."""
    names: list[str] = []
    cursor = None
    for _ in range(1000):
        page = provider.next(context, cursor)
        names += [e.entity["metadata"]["annotations"][SLUG] for e in page.entities]
        if page.done:
            return names
        cursor = page.cursor
    raise AssertionError("the cycle did not end")


SLUG = "github.com/project-slug"


def candidate(name: str, org: str = "acme") -> RemovalCandidate:
    entity = repository_entity(
        make_repo(0, org) | {"name": name, "full_name": f"{org}/{name}"}, owner=org
    )
    return RemovalCandidate(f"component:default/{entity_name(name)}".lower(), entity)


SHIFTS: dict[str, Callable[[GitHubApi], None]] = {
    "the first repositories of the organisation are deleted": lambda api: api.remove(
        {"repo-0000", "repo-0001", "repo-0002"}
    ),
    "repositories already read are renamed": lambda api: (
        api.rename("repo-0004", "zzz-renamed"),
        api.rename("repo-0005", "aaa-renamed"),
    ),
    "repositories already read are transferred away": lambda api: (
        api.transfer("repo-0001", "elsewhere"),
        api.transfer("repo-0008", "elsewhere"),
    ),
    "repositories are created": lambda api: api.insert(4),
    "repositories are transferred in": lambda api: api.insert(2, created_early=True),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shift", list(SHIFTS))
def test_no_repository_slips_between_pages_when_others_change_meanwhile(
    shift: str, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 45 repositories read 10 a page, and a change to the organisation before pages 2
    # and 4 are answered
    with GitHubApi(count=45, token=token) as api:
        provider = github(api, per_page=10)
        before = set(api.names())
        api.hooks[2] = lambda: SHIFTS[shift](api)
        api.hooks[4] = lambda: SHIFTS[shift](api) if "created" in shift else None

        # When a cycle reads the pages
        read = in_burst(provider, lambda context: read_all(provider, context))
        after = set(api.names())

    # Then every repository that was in the organisation from start to end was read, once
    names = {slug.split("/", 1)[1] for slug in read}
    assert (before & after) <= names
    assert len(read) == len(set(read))
    # And what was created after the cycle began came last (it is read in this cycle or the
    # next, never in place of another)
    if shift == "repositories are created":
        assert after - before <= names


@pytest.mark.timeout(60)
def test_removal_checks_ask_github_about_each_candidate(token: str) -> None:
    # Given repositories that were deleted, renamed, transferred away, or are still there
    with GitHubApi(count=20, token=token) as api:
        api.remove({"repo-0001"})
        api.rename("repo-0002", "repo-two")
        api.transfer("repo-0004", "elsewhere")
        provider = github(api)
        candidates = [candidate(n) for n in ("repo-0001", "repo-0002", "repo-0004", "repo-0005")]

        # When the provider checks them
        check = in_burst(provider, lambda c: provider.check_removals(c, candidates))

        # Then the deleted one and the transferred one are gone, the renamed one is gone under
        # its old name and present under its new one, and the one still there is present
        assert set(check.gone) == {
            "component:default/repo-0001",
            "component:default/repo-0002",
            "component:default/repo-0004",
        }
        assert [e.entity["metadata"]["name"] for e in check.present] == ["repo-two", "repo-0005"]
        assert check.present[0].entity["metadata"]["annotations"][SLUG] == "acme/repo-two"
        assert check.present[0].location_key == "url:https://github.example/acme/repo-two"
        asked = [r.path for r in api.requests]
        assert asked == [
            "/repos/acme/repo-0001",
            "/repos/acme/repo-0002",
            "/repositories/1002",
            "/repos/acme/repo-0004",
            "/repositories/1004",
            "/repos/acme/repo-0005",
        ]


@pytest.mark.timeout(60)
def test_an_archived_candidate_is_gone_when_archived_repositories_are_left_out(
    token: str,
) -> None:
    with GitHubApi(count=20, token=token) as api:
        provider = github(api, include_archived=False)
        check = in_burst(provider, lambda c: provider.check_removals(c, [candidate("repo-0007")]))
    assert list(check.gone) == ["component:default/repo-0007"]
    assert list(check.present) == []


@pytest.mark.timeout(60)
def test_a_candidate_github_cannot_answer_for_is_kept_and_logged_with_the_request_id(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given GitHub failing on the first candidate's request, and a candidate without a slug
    caplog.set_level(logging.INFO, logger="providers.github")
    with GitHubApi(count=20, token=token) as api:
        api.at[1] = Answer(502, {"message": "Server Error"})
        provider = github(api)
        nameless = RemovalCandidate("component:default/x", {"metadata": {"name": "x"}})
        candidates = [candidate("repo-0003"), nameless, candidate("repo-0099")]

        check = in_burst(provider, lambda c: provider.check_removals(c, candidates))

        # Then only the one GitHub said is gone is gone; the others are kept, and the log says
        # why, with GitHub's request id
        assert list(check.gone) == ["component:default/repo-0099"]
        assert list(check.present) == []
        assert (
            f"answered 502 Bad Gateway: Server Error (X-GitHub-Request-Id: {api.request_ids[0]})"
        ) in caplog.text
        assert "kept component:default/x: it has no github.com/project-slug annotation" in (
            caplog.text
        )
        assert token not in caplog.text


@pytest.mark.timeout(60)
def test_a_rate_limit_during_checks_asks_to_wait_for_the_reset(token: str) -> None:
    # Given a limit that allows one more request, resetting an hour after it is spent
    with GitHubApi(count=20, token=token) as api:
        api.limit_for(3600, remaining=1)
        provider = github(api)
        candidates = [candidate(n) for n in ("repo-0100", "repo-0101", "repo-0102")]

        with pytest.raises(RetryAfter) as raised:
            in_burst(provider, lambda c: provider.check_removals(c, candidates))

        # Then the first candidate was asked about; the others were not, and rather than be
        # kept for a whole cycle, the batch waits for the reset
        assert [r.path for r in api.requests] == ["/repos/acme/repo-0100"]
        assert 3590 <= raised.value.seconds <= MAX_WAIT
        assert "GitHub rate limit spent; it resets at" in raised.value.reason


@pytest.mark.timeout(120)
def test_a_rate_limit_in_the_checking_phase_resumes_the_checks_after_the_reset(
    database_url: str, tmp_path: Path, token: str
) -> None:
    # Given a catalog of 30 repositories, five of them since deleted, checked two a batch
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=30, token=token) as api:
        ingestion.add_provider(github(api), burst_interval=0, backoff=[100], removal_check_batch=2)
        ingestion.run_cycle("acme-repos")
        deleted = {f"repo-{n:04d}" for n in (1, 9, 15, 21, 27)}
        api.remove(deleted)
        # And a limit that allows the page and two checks, then resets 2 s later
        api.limit_for(2, remaining=3)
        before = len(api.requests)

        # When the next cycle runs
        reports = ingestion.run_cycle("acme-repos")

        # Then the checking phase answered its first batch, waited for the reset (no backoff,
        # no failure) and resumed with the next batch: each candidate was asked about once
        assert [r.outcome for r in reports] == ["continued", "waiting", "done"]
        assert (reports[1].checked, reports[2].checked) == (2, 3)
        waiting = reports[1]
        assert waiting.next is not None and waiting.next.action is Action.CHECK
        assert 1 <= waiting.next.countdown <= 4
        assert "removal checks after component:default/repo-0009" in (waiting.reason or "")
        assert "GitHub rate limit spent; it resets at" in (waiting.reason or "")
        asked = [r.path for r in api.requests[before:] if r.path.startswith("/repos/")]
        assert sorted(asked) == sorted(f"/repos/acme/{n}" for n in deleted)
        # And every deleted repository was removed in this cycle, none kept for the next
        assert reports[-1].sweep is not None and reports[-1].sweep.removed == 5
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)
    cycle = ingestion.store.cycles("acme-repos")[0]
    assert (cycle["status"], cycle["checked"], cycle["kept"], cycle["removed"]) == (
        CycleStatus.COMPLETED,
        5,
        0,
        5,
    )
    status = ingestion.store.status("acme-repos")
    assert (status.attempts, status.last_error) == (0, None)
    assert ingestion.errors("acme-repos") == []


@pytest.mark.timeout(60)
def test_a_rest_answer_read_again_in_a_burst_is_conditional_and_spends_no_rate_limit(
    token: str,
) -> None:
    # Given a repository renamed twice: both old names lead to the same repository
    with GitHubApi(count=20, token=token) as api:
        api.rename("repo-0006", "repo-three")
        api.rename("repo-three", "repo-3")
        provider = github(api)
        candidates = [candidate("repo-0006"), candidate("repo-three")]

        check = in_burst(provider, lambda c: provider.check_removals(c, candidates))

        # Then the second read of /repositories/1006 sent the ETag, got a 304 and cost nothing
        [first, second] = api.seen("/repositories/1006")
        assert "if-none-match" not in first.headers
        assert second.headers["if-none-match"].startswith('W/"')
        assert api.remaining == api.limit - 3  # two 301s and one 200; the 304 is free
        assert set(check.gone) == {"component:default/repo-0006", "component:default/repo-three"}
        assert [e.entity["metadata"]["name"] for e in check.present] == ["repo-3", "repo-3"]


@pytest.mark.timeout(60)
def test_a_redirect_off_the_api_origin_is_not_followed(token: str) -> None:
    with GitHubApi(count=20, token=token) as api:
        api.at[1] = Answer(
            301,
            {"message": "Moved Permanently"},
            {"Location": "https://collector.example/repositories/1"},
        )
        provider = github(api)
        check = in_burst(provider, lambda c: provider.check_removals(c, [candidate("repo-0001")]))
        assert len(api.requests) == 1
    assert (list(check.gone), list(check.present)) == ([], [])


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_unknown_organisation_is_refused_naming_the_likely_causes(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an organisation GitHub cannot resolve
    caplog.set_level(logging.WARNING, logger="providers.github")
    ingestion = sqlite(tmp_path)
    with GitHubApi(org="acme", token=token) as api:
        provider = GitHubProvider("gone", "acme-typo", token_env=TOKEN_ENV, api_url=api.url)
        with pytest.raises(SourceRefused) as raised:
            in_burst(provider, lambda c: provider.next(c))
        ingestion.add_provider(provider, backoff=[60])
        report = one_burst(ingestion, "gone")

    # Then the error says what is wrong, what may cause it, and GitHub's request id
    message = str(raised.value)
    assert "Could not resolve to an Organization with the login of 'acme-typo'" in message
    assert f"The organisation 'acme-typo' cannot be read with the token in {TOKEN_ENV}" in message
    for cause in ("does not exist", "read:org", "SAML single sign-on", "fine-grained token"):
        assert cause in message
    assert f"(X-GitHub-Request-Id: {api.request_ids[0]})" in message
    assert api.request_ids[0] in caplog.text
    assert report.outcome == "failed"
    assert "SourceRefused: POST " in burst_error(ingestion, "gone")
    assert ingestion.store.status("gone").action is Action.PARKED


SSO_REQUIRED = "required; url=https://github.example/orgs/acme/sso?authorization"
SAML_ENFORCED = "Resource protected by organization SAML enforcement."
SSO_REFUSALS = {
    # REST: a 403 that is no rate limit
    "a 403": (
        Answer(403, {"message": SAML_ENFORCED}, {"X-GitHub-SSO": SSO_REQUIRED}),
        f"answered 403 Forbidden: {SAML_ENFORCED}",
    ),
    # GraphQL: a 200 with a FORBIDDEN error
    "a graphql forbidden error": (
        Answer(
            200,
            {
                "data": {"organization": None},
                "errors": [
                    {"type": "FORBIDDEN", "path": ["organization"], "message": SAML_ENFORCED}
                ],
            },
            {"X-GitHub-SSO": SSO_REQUIRED},
        ),
        f"GitHub answered: {SAML_ENFORCED}",
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("refusal", list(SSO_REFUSALS))
def test_an_organisation_behind_single_sign_on_is_refused_with_githubs_sso_link(
    refusal: str, token: str
) -> None:
    # Given an organisation that enforces SAML single sign-on the token was not authorised for
    answer, said = SSO_REFUSALS[refusal]
    with GitHubApi(token=token) as api:
        api.at[1] = answer
        provider = github(api)

        # When a page is read
        with pytest.raises(SourceRefused) as raised:
            in_burst(provider, lambda c: provider.next(c))

    # Then the refusal says what GitHub said, where to authorise the token, and the request id
    message = str(raised.value)
    assert said in message
    assert f"GitHub asks for single sign-on: {SSO_REQUIRED}" in message
    assert f"(X-GitHub-Request-Id: {api.request_ids[0]})" in message


@pytest.mark.timeout(60)
def test_a_graphql_answer_that_is_not_json_fails_with_githubs_request_id(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a proxy in front of GitHub that answers 200 with an HTML page
    caplog.set_level(logging.WARNING, logger="providers.github")
    with GitHubApi(token=token) as api:
        api.at[1] = Answer(
            200,
            raw=b"<html><body>Sign in to the proxy</body></html>",
            headers={"Content-Type": "text/html; charset=utf-8"},
        )
        provider = github(api)

        # When a page is read
        with pytest.raises(SourceError) as raised:
            in_burst(provider, lambda c: provider.next(c))

    # Then the error says what came instead of JSON, with GitHub's request id
    message = str(raised.value)
    request_id = api.request_ids[0]
    assert "answered 200 with a body that is not JSON (text/html; charset=utf-8)" in message
    assert "Sign in to the proxy" in message
    assert message.endswith(f"(X-GitHub-Request-Id: {request_id})")
    # And the failed request is logged with it
    logged = [r.getMessage() for r in caplog.records if r.name == "providers.github"]
    assert len(logged) == 1
    assert "not JSON" in logged[0] and request_id in logged[0]


def test_bad_credentials_are_a_refusal_that_retrying_cannot_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "ghp_wrong")
    with GitHubApi(token=TOKEN) as api:
        provider = github(api)
        with pytest.raises(SourceRefused) as raised:
            in_burst(provider, lambda c: provider.next(c))
    assert isinstance(raised.value, TokenRefused)
    assert "ghp_wrong" not in str(raised.value)


REFUSALS: dict[str, tuple[Callable[[GitHubApi], None], Callable[[GitHubApi], None], list[str]]] = {
    # The organisation is hidden from the token (GraphQL's NOT_FOUND), then made visible
    "an organisation GitHub does not find": (
        lambda api: setattr(api, "org", "acme-hidden"),
        lambda api: setattr(api, "org", "acme"),
        [
            "Could not resolve to an Organization with the login of 'acme'",
            "does not exist",
            "read:org",
            "SAML single sign-on",
            "fine-grained token",
        ],
    ),
    # GitHub refuses the token (401 Bad credentials), then accepts it
    "bad credentials": (
        lambda api: setattr(api, "token", "ghp_someOtherToken"),
        lambda api: setattr(api, "token", TOKEN),
        ["401 Unauthorized: Bad credentials", "wrong, expired or revoked"],
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refusal_parks_the_provider_until_start_begins_a_cycle_that_completes(
    refusal: str, database_url: str, tmp_path: Path, token: str
) -> None:
    refuse, answer, causes = REFUSALS[refusal]
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=150, token=token) as api:
        ingestion.add_provider(github(api), burst_interval=0, backoff=[0.01, 0.01])
        refuse(api)

        # When a cycle begins and GitHub refuses
        reports = ingestion.run_cycle("acme-repos")

        # Then the provider is parked after one request: not asked again, no backoff step
        assert [r.outcome for r in reports] == ["failed"]
        assert len(api.requests) == 1
        status = ingestion.store.status("acme-repos")
        assert (status.action, status.attempts) == (Action.PARKED, 0)
        assert [c["status"] for c in ingestion.store.cycles("acme-repos")] == [
            CycleStatus.CANCELLED
        ]
        # And its status says what GitHub said, the likely causes, and GitHub's request id
        last_error = status.last_error or ""
        assert last_error.startswith("provider 'acme-repos', cycle ")
        for cause in causes:
            assert cause in last_error
        assert f"(X-GitHub-Request-Id: {api.request_ids[0]})" in last_error
        assert TOKEN_ENV in last_error
        # And nothing announces a parked provider, however long it waits
        assert ingestion.store.due_steps(["acme-repos"], resend_after=timedelta(0)) == []

        # When GitHub answers again and an operator starts the provider
        answer(api)
        doorbell = ingestion.start("acme-repos")
        started = follow(ingestion, "acme-repos", doorbell)

        # Then a new cycle reads the organisation and completes
        assert started[-1].outcome == "done" and started[-1].sweep is not None
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)
    status = ingestion.store.status("acme-repos")
    assert (status.action, status.attempts, status.last_error) == (Action.REST, 0, None)
    assert [c["status"] for c in ingestion.store.cycles("acme-repos")] == [
        CycleStatus.COMPLETED,
        CycleStatus.CANCELLED,
    ]


def follow(ingestion: IncrementalIngestion, name: str, doorbell: Doorbell) -> list[BurstReport]:
    """Run the steps of the cycle ``doorbell`` began, in this process, until its sweep."""
    reports: list[BurstReport] = []
    for _ in range(100):
        time.sleep(max(0.0, doorbell.countdown))
        report = ingestion.engine.run_step(name, doorbell.ticket, "test/1")
        reports.append(report)
        if report.sweep is not None or report.next is None:
            return reports
        doorbell = report.next
    raise AssertionError("the cycle did not end")


@pytest.mark.timeout(60)
def test_graphqls_rate_limited_error_waits_for_the_reset(tmp_path: Path, token: str) -> None:
    # Given a spent limit that resets in 2 s: GitHub's GraphQL answers 200 with RATE_LIMITED
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=150, token=token) as api:
        api.limit_for(2)
        ingestion.add_provider(github(api), burst_interval=0, backoff=[100])
        reports = ingestion.run_cycle("acme-repos")
        assert [r.outcome for r in reports] == ["waiting", "continued", "done"]
        assert "RATE_LIMITED" not in (reports[0].reason or "")
        assert "API rate limit exceeded for user ID 1.; it resets at" in (reports[0].reason or "")
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)


def test_the_graphql_endpoint_follows_the_rest_url() -> None:
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example/api/v3/") == "https://ghe.example/api/graphql"


# -- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [".github", "My Repo", "a..b", "__init__", "x" * 100, "é-ü", "a--b", "-", "repo.v2"],
)
def test_entity_names_are_valid_and_only_change_when_they_must(raw: str) -> None:
    name = entity_name(raw)
    assert valid_name(name)
    if valid_name(raw):
        assert name == raw
    else:
        assert name != raw


def test_names_that_clean_up_alike_stay_distinct() -> None:
    assert entity_name("a. .b") != entity_name("a_ _b")
    assert entity_name("a. .b").startswith("a.b-")
    assert entity_name("a..b") == "a..b"  # separator runs are valid names


def test_topics_that_are_not_valid_tags_are_left_out() -> None:
    repo = {
        **make_repo(1),
        "topics": ["ok", "Upper", "with space", "x" * 64, "ok", "new\n", "snake_case", "-x"],
    }
    entity = repository_entity(repo, owner="acme")
    assert entity["metadata"]["tags"] == ["ok", "upper"]
