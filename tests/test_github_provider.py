"""The GitHub repositories provider against a GitHub lookalike on 127.0.0.1.

The fake serves GitHub-shaped pages with ``Link`` headers and rate-limit headers, counts its
rate limit down for real, and can answer any request with a 401, 403, 429 or 502.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from ingestion import Action, IncrementalIngestion
from ingestion.entities import valid_name
from providers._names import entity_name
from providers.github import MAX_WAIT, GitHubProvider, repository_entity
from tests.support.fake_apis import Answer, GitHubApi, expected_refs, make_repo
from tests.support.ingestions import burst_error, everything_stored, make_ingestion, one_burst

TOKEN = "ghp_madeUpToken0123456789abcdefABCDEF"
TOKEN_ENV = "TEST_GITHUB_TOKEN"


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


def test_a_cycle_reads_every_repository_100_a_page_following_the_link_header(
    database_url: str, tmp_path: Path, token: str
) -> None:
    # Given an organisation of 250 repositories
    ingestion = make_ingestion(database_url, tmp_path)
    with GitHubApi(count=250, token=token) as api:
        ingestion.add_provider(github(api), burst_length=0.001, burst_interval=0)

        # When a cycle runs, one page a burst
        reports = ingestion.run_cycle("acme-repos")

        # Then three pages were asked for, the first with per_page=100, the rest by their Link
        requests = api.seen("/orgs/acme/repos")
        assert [r.query.get("page") for r in requests] == [None, "2", "3"]
        assert {r.query["per_page"] for r in requests} == {"100"}
        assert requests[0].query["sort"] == "full_name"
        assert {r.headers["authorization"] for r in requests} == {f"Bearer {token}"}
        assert len(reports) == 3 and reports[-1].outcome == "done"
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
        assert time.monotonic() - started < 15
        assert [r.outcome for r in reports] == ["waiting", "done"]
        assert reports[0].pages == 1
        assert reports[0].next is not None and 1 <= reports[0].next.countdown <= 4
        reason = reports[0].reason or ""
        assert "GitHub rate limit: GET " in reason
        assert "403 Forbidden: API rate limit exceeded" in reason and "resets at" in reason
        requests = api.seen("/orgs/acme/repos")
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
        requests = api.seen("/orgs/acme/repos")
        assert len(requests) == 3
        assert requests[1].at >= api.resets[0]
        assert [r.outcome for r in reports] == ["waiting", "done"]
        assert "GitHub rate limit spent; it resets at" in (reports[0].reason or "")
        assert set(ingestion.catalog.refs("acme-repos")) == expected_refs(api)


def test_a_429_with_retry_after_waits_that_long(tmp_path: Path, token: str) -> None:
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=150, token=token) as api:
        api.at[2] = Answer(429, {"message": "Too many requests"}, {"Retry-After": "1"})
        ingestion.add_provider(github(api), burst_length=60, burst_interval=0, backoff=[100])
        reports = ingestion.run_cycle("acme-repos")
    assert [r.outcome for r in reports] == ["waiting", "done"]
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
        ingestion.add_provider(github(api), burst_length=60, burst_interval=0, backoff=[0.01])
        reports = ingestion.run_cycle("acme-repos")
        assert [r.outcome for r in reports] == ["failed", "done"]
        error = burst_error(ingestion, "acme-repos")
        assert error.startswith("provider 'acme-repos', cycle ")
        assert (
            f"SourceUnavailable: GET {api.url}/orgs/acme/repos?per_page=100&type=all&sort="
            "full_name&direction=asc&page=2 answered 502 Bad Gateway: Server Error"
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
    assert report.outcome == "failed"
    last_error = ingestion.store.status("acme-repos").last_error or ""
    assert "TokenRefused: GET " in last_error
    assert "answered 401 Unauthorized: Bad credentials; the server refused the token in " in (
        last_error
    )
    assert TOKEN_ENV in last_error
    assert "ghp_expiredTokenValue000" not in everything_stored(ingestion)


def test_the_token_shows_in_no_log_and_no_stored_row(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ingestion = sqlite(tmp_path)
    with GitHubApi(count=120, token=token) as api:
        api.at[2] = Answer(500, {"message": f"echoing your header: Bearer {token}"})
        ingestion.add_provider(github(api), burst_interval=0, backoff=[0.01])
        ingestion.run_cycle("acme-repos")
    assert "HTTP Request: GET" in caplog.text
    assert "echoing your header: Bearer ***" in burst_error(ingestion, "acme-repos")
    assert token not in caplog.text
    assert token not in everything_stored(ingestion)


def test_a_next_link_off_the_api_origin_is_refused(tmp_path: Path, token: str) -> None:
    ingestion = sqlite(tmp_path)
    with GitHubApi(token=token) as api:
        link = '<https://collector.example/orgs/acme/repos?page=2>; rel="next"'
        api.at[1] = Answer(body=[make_repo(1)], headers={"Link": link})
        ingestion.add_provider(github(api))
        assert one_burst(ingestion, "acme-repos").outcome == "failed"
    assert "the next page https://collector.example/orgs/acme/repos?page=2 is not on" in (
        burst_error(ingestion, "acme-repos")
    )


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
