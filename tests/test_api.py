"""The admin HTTP API, served by uvicorn on 127.0.0.1, against real SQLite and Postgres.

Cycles run through the real engine in this process (``run_cycle``, ``engine.run_step``); the
API reads and steers the same database over HTTP, as an operator would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from ingestion import CycleStatus, IncrementalIngestion, Settings
from ingestion.api import InsecureConfiguration, create_api
from ingestion.engine import BurstReport
from ingestion.settings import EMBEDDED_BROKER
from ingestion.store import models as m
from providers.synthetic import SyntheticSource
from tests.support.api_server import serve
from tests.support.synthetic_app import build

TOKEN = "admin-token-for-tests-0123456789"
METRICS_TOKEN = "metrics-token-for-tests-987654"
OWNER = "test/api"


@dataclass
class Api:
    url: str
    ingestion: IncrementalIngestion
    source: SyntheticSource
    broker_dir: Path

    def request(
        self, method: str, path: str, token: str | None = TOKEN, **params: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(
            method, self.url + path, headers=headers, params=params or None, timeout=30.0
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.request("GET", path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str) -> Any:
        response = self.request("POST", path)
        assert response.status_code == 200, response.text
        return response.json()

    def delete(self, path: str) -> Any:
        response = self.request("DELETE", path)
        assert response.status_code == 200, response.text
        return response.json()

    def cycle(self, name: str = "services") -> list[BurstReport]:
        reports = self.ingestion.run_cycle(name)
        assert reports[-1].outcome == "done", reports[-1].reason
        return reports


@pytest.fixture
def api(database_url: str, source_server: Any, tmp_path: Path) -> Iterator[Api]:
    """The API of an app with two providers: ``services`` (600 entities) and ``broken`` (404)."""
    fast = {"burst_length": 60, "burst_interval": 0, "rest_length": 3600, "backoff": [0.05]}
    specs = [
        {"name": "services", "url": source_server.url, "per_page": 50, "options": fast},
        {"name": "broken", "url": source_server.url + "/missing", "options": fast},
    ]
    broker_dir = tmp_path / "broker"
    settings = Settings(
        database_url=database_url,
        broker_url=EMBEDDED_BROKER,
        broker_dir=broker_dir,
        page_timeout=5.0,
        time_limit_grace=1.0,
    )
    ingestion = build(settings, specs)
    app = create_api(ingestion, admin_token=TOKEN, metrics_token=METRICS_TOKEN)
    with serve(app) as url:
        yield Api(url, ingestion, source_server.source, broker_dir)
    ingestion.store.dispose()


def start_step(api: Api, name: str) -> BurstReport:
    """Begin a new cycle of ``name`` and run its first burst here."""
    doorbell = api.ingestion.store.start(name)
    return api.ingestion.engine.run_step(name, doorbell.ticket, OWNER)


def near_now(stamp: str, within: float = 30.0) -> bool:
    moment = datetime.fromisoformat(stamp)
    return abs((moment - datetime.now(UTC)).total_seconds()) < within


# -- health and authentication ---------------------------------------------------------------


def test_health_needs_no_token_and_names_providers_with_two_open_cycles(api: Api) -> None:
    response = api.request("GET", "/incremental/health", token=None)
    assert response.status_code == 200
    assert response.json() == {"healthy": True, "providers": {}, "error": None}

    # Given a provider with a second running cycle (the state the check exists to catch)
    start_step(api, "broken")
    with api.ingestion.store.db.sql_engine.begin() as conn:
        conn.execute(
            insert(m.cycles).values(
                provider="broken",
                status=CycleStatus.RUNNING.value,
                bursts=0,
                pages=0,
                entities=0,
                written=0,
                unchanged=0,
                rejected=0,
                removed=0,
                blocked=0,
                started_at=datetime.now(UTC),
            )
        )
    body = api.request("GET", "/incremental/health", token=None).json()
    assert body["healthy"] is False
    assert body["providers"] == {"broken": 2}


ROUTES = [
    ("GET", "/incremental/providers"),
    ("GET", "/incremental/providers/services"),
    ("POST", "/incremental/providers/services/trigger"),
    ("POST", "/incremental/providers/services/start"),
    ("POST", "/incremental/providers/services/cancel"),
    ("DELETE", "/incremental/providers/services"),
    ("GET", "/incremental/providers/services/checkpoints"),
    ("DELETE", "/incremental/providers/services/checkpoints"),
    ("GET", "/incremental/providers/services/marks"),
    ("DELETE", "/incremental/providers/services/marks"),
    ("POST", "/incremental/cleanup"),
    ("GET", "/incremental/providers/services/errors"),
    ("GET", "/incremental/providers/services/error-rules"),
    ("GET", "/incremental/providers/services/cycles"),
    ("GET", "/incremental/providers/services/cycles/1"),
    ("GET", "/incremental/providers/services/bursts"),
    ("GET", "/entities"),
    ("GET", "/changes"),
    ("GET", "/incremental/events"),
    ("GET", "/incremental/events/1"),
    ("GET", "/entities/component:default/service-0000001"),
    ("GET", "/metrics"),
]


def test_every_route_but_health_refuses_a_missing_or_wrong_token(api: Api) -> None:
    wrong = "wrong-token-that-must-not-be-echoed"
    before = api.ingestion.store.status("services").ticket
    for method, path in ROUTES:
        missing = api.request(method, path, token=None)
        assert missing.status_code == 401, (method, path)
        assert "missing bearer token" in missing.json()["error"]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        bad = api.request(method, path, token=wrong)
        assert bad.status_code == 401, (method, path)
        assert "wrong bearer token" in bad.json()["error"]
        assert wrong not in bad.text
        basic = httpx.request(
            method, api.url + path, headers={"Authorization": f"Basic {TOKEN}"}, timeout=10
        )
        assert basic.status_code == 401, (method, path)
    # Then nothing was steered by the refused calls.
    assert api.ingestion.store.status("services").ticket == before


def test_the_metrics_token_reads_metrics_only(api: Api) -> None:
    assert api.request("GET", "/metrics", token=METRICS_TOKEN).status_code == 200
    assert api.request("GET", "/incremental/providers", token=METRICS_TOKEN).status_code == 401
    assert api.request("GET", "/entities", token=METRICS_TOKEN).status_code == 401


def test_create_api_refuses_to_run_without_a_token_unless_told_it_is_insecure(
    api: Api,
) -> None:
    with pytest.raises(InsecureConfiguration, match="INGESTION_ADMIN_TOKEN"):
        create_api(api.ingestion)
    with pytest.raises(InsecureConfiguration, match="too short"):
        create_api(api.ingestion, admin_token="short")
    with serve(create_api(api.ingestion, insecure=True)) as url:
        response = httpx.get(url + "/incremental/providers", timeout=10)
    assert response.status_code == 200
    assert [p["name"] for p in response.json()] == ["broken", "services"]


def test_openapi_docs_are_served(api: Api) -> None:
    docs = httpx.get(api.url + "/docs", timeout=10)
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = httpx.get(api.url + "/openapi.json", timeout=10).json()
    assert "/incremental/providers/{name}/trigger" in schema["paths"]
    assert "/entities/{ref}" in schema["paths"]


# -- providers -----------------------------------------------------------------------------


def test_providers_lists_every_registered_provider(api: Api) -> None:
    providers = api.get("/incremental/providers")
    assert [p["name"] for p in providers] == ["broken", "services"]
    for provider in providers:
        # Registered at startup, a new provider's first cycle is due now.
        assert provider["action"] == "rest"
        assert provider["action"] == "rest"
        assert near_now(provider["due_at"])
        assert provider["entities"] == 0


def test_provider_detail_shows_the_current_cycle_while_it_runs(api: Api) -> None:
    seen: dict[int, Any] = {}

    def at_page(report: BurstReport) -> None:
        if report.pages == 3:
            seen[3] = api.get("/incremental/providers/services")

    api.ingestion.run_cycle("services", progress=at_page)
    during = seen[3]
    assert during["running"] is True
    assert during["worker"].startswith("foreground/")
    assert during["action"] == "ingest"
    progress = during["current_cycle"]
    assert (progress["bursts"], progress["pages"], progress["entities"]) == (1, 3, 150)
    assert progress["rejected"] == 0

    after = api.get("/incremental/providers/services")
    assert after["action"] == "rest"
    assert after["current_cycle"] is None
    assert after["worker"] is None
    last = after["last_completed_cycle"]
    assert last["id"] == progress["id"]
    assert (last["entities"], last["removed"], last["pages"]) == (600, 0, 12)
    assert last["duration_seconds"] > 0
    assert datetime.fromisoformat(after["due_at"]) > datetime.now(UTC) + timedelta(minutes=50)
    assert after["options"]["rest_length"] == 3600


def test_last_completed_cycle_counts_removals_and_rejections(api: Api) -> None:
    api.cycle()
    api.source.drop(0.1)
    api.source.invalid = {1, 2}
    api.cycle()
    last = api.get("/incremental/providers/services")["last_completed_cycle"]
    expected = len(api.source.refs())
    assert last["entities"] == expected
    assert last["rejected"] == 2
    assert last["removed"] == 600 - expected
    assert api.get("/incremental/providers/services")["entities"] == expected


def test_provider_detail_shows_attempts_and_the_last_error(api: Api) -> None:
    report = start_step(api, "broken")
    assert report.outcome == "failed"
    detail = api.get("/incremental/providers/broken")
    assert detail["action"] == "backoff"
    assert detail["action"] == "backoff"
    assert detail["attempts"] == 1
    error = detail["last_error"]
    assert "provider 'broken'" in error["message"]
    assert "404" in error["message"]
    assert "Traceback" in error["detail"]
    assert near_now(error["at"])
    assert detail["current_cycle"]["bursts"] == 1


def test_a_blocked_sweep_is_shown(database_url: str, tmp_path: Path) -> None:
    source = SyntheticSource(count=100, per_page=50)
    from providers.synthetic import SourceServer

    with SourceServer(source) as server:
        options = {"burst_length": 60, "reject_removals_above_percentage": 10}
        specs = [{"name": "guarded", "url": server.url, "options": options}]
        settings = Settings(
            database_url=database_url, broker_url=EMBEDDED_BROKER, broker_dir=tmp_path / "b"
        )
        ingestion = build(settings, specs)
        with serve(create_api(ingestion, admin_token=TOKEN)) as url:
            ingestion.run_cycle("guarded")
            source.drop(0.5)
            ingestion.run_cycle("guarded")
            detail = httpx.get(
                url + "/incremental/providers/guarded",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            ).json()
        ingestion.store.dispose()
    blocked = detail["blocked_sweep"]
    assert blocked["count"] == 50
    assert "10" in blocked["reason"]
    assert detail["last_completed_cycle"]["removed"] == 0


def test_an_unknown_provider_is_404_with_the_known_names(api: Api) -> None:
    for method, path in [
        ("GET", "/incremental/providers/nope"),
        ("POST", "/incremental/providers/nope/trigger"),
        ("POST", "/incremental/providers/nope/start"),
        ("POST", "/incremental/providers/nope/cancel"),
        ("DELETE", "/incremental/providers/nope"),
        ("GET", "/incremental/providers/nope/marks"),
        ("DELETE", "/incremental/providers/nope/marks"),
        ("GET", "/incremental/providers/nope/errors"),
        ("GET", "/entities?provider=nope"),
    ]:
        response = api.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json() == {
            "error": "no provider named 'nope' is registered (known: broken, services)",
            "status": 404,
        }
    unknown_route = api.request("GET", "/incremental/nothing-here")
    assert unknown_route.status_code == 404
    assert "/docs" in unknown_route.json()["error"]


# -- steering ------------------------------------------------------------------------------


def burst_messages(api: Api, provider: str) -> int:
    """Burst tasks for ``provider`` waiting in the file broker."""
    return sum(
        1
        for path in api.broker_dir.rglob("*")
        if path.is_file() and f"ingestion.burst[{provider}]" in path.read_text(errors="replace")
    )


def test_trigger_ends_the_rest_now_and_announces_it(api: Api) -> None:
    api.cycle()
    resting = api.get("/incremental/providers/services")
    assert not near_now(resting["due_at"], within=600)
    sent = burst_messages(api, "services")

    step = api.post("/incremental/providers/services/trigger")

    assert step["provider"] == "services"
    assert step["action"] == "rest"
    assert near_now(step["due_at"])
    assert "due now" in step["message"]
    detail = api.get("/incremental/providers/services")
    assert near_now(detail["due_at"])
    assert detail["ticket"] == step["ticket"]
    assert burst_messages(api, "services") == sent + 1
    # And the announced step runs: a worker (here, the engine) begins a new cycle.
    report = api.ingestion.engine.run_step("services", step["ticket"], OWNER)
    assert report.outcome == "done"
    assert api.get("/incremental/providers/services")["last_completed_cycle"]["id"] == (
        report.cycle_id
    )


def test_start_cancels_the_open_cycle_and_begins_a_new_one(api: Api) -> None:
    failed = start_step(api, "broken")
    old_cycle = failed.cycle_id

    step = api.post("/incremental/providers/broken/start")

    assert step["action"] == "ingest"
    assert step["cycle"] is not None and step["cycle"] != old_cycle
    assert near_now(step["due_at"])
    statuses = {c["id"]: c["status"] for c in api.ingestion.store.cycles("broken")}
    assert statuses[old_cycle] == "cancelled"
    assert statuses[step["cycle"]] == "running"
    detail = api.get("/incremental/providers/broken")
    assert detail["attempts"] == 0
    assert detail["current_cycle"]["id"] == step["cycle"]


def test_cancel_rests_the_provider_and_start_begins_again(api: Api) -> None:
    opened = api.post("/incremental/providers/services/start")
    cycle = opened["cycle"]

    cancelled = api.post("/incremental/providers/services/cancel")

    assert cancelled["action"] == "rest"
    detail = api.get("/incremental/providers/services")
    assert detail["action"] == "rest"
    assert detail["current_cycle"] is None
    statuses = {c["id"]: c["status"] for c in api.ingestion.store.cycles("services")}
    assert statuses[cycle] == "cancelled"
    # Not stuck: start begins a new cycle, and it runs to completion.
    again = api.post("/incremental/providers/services/start")
    assert again["cycle"] != cycle
    report = api.ingestion.engine.run_step("services", again["ticket"], OWNER)
    assert report.outcome == "done"
    assert (
        api.get("/incremental/providers/services")["last_completed_cycle"]["id"] == again["cycle"]
    )


def test_delete_purges_the_records_and_keeps_the_entities(api: Api) -> None:
    api.source.invalid = {5}
    api.cycle()
    assert api.get("/incremental/providers/services/errors")["items"]
    assert api.get("/incremental/providers/services/checkpoints")["items"]

    step = api.delete("/incremental/providers/services")

    assert "purged" in step["message"]
    assert step["action"] == "rest"
    assert near_now(step["due_at"])
    assert api.get("/incremental/providers/services/errors")["items"] == []
    assert api.get("/incremental/providers/services/checkpoints")["items"] == []
    detail = api.get("/incremental/providers/services")
    assert detail["last_completed_cycle"] is None
    assert detail["entities"] == 599
    assert len(api.get("/entities", provider="services", limit=1000)["items"]) == 599


def test_checkpoints_are_listed_newest_first_and_deleted_for_closed_cycles(api: Api) -> None:
    api.cycle()
    marks = api.get("/incremental/providers/services/checkpoints")["items"]
    assert api.get("/incremental/providers/services/marks")["items"] == marks  # Backstage's name
    assert [m["sequence"] for m in marks] == list(range(12, 0, -1))
    assert marks[0]["cursor"] == {"page": 13}
    assert all(m["entities"] == 50 for m in marks)
    assert len(api.get("/incremental/providers/services/checkpoints", limit=5)["items"]) == 5

    # An open cycle's marks are not touched by a delete.
    start_step(api, "broken")
    deleted = api.delete("/incremental/providers/services/checkpoints")
    assert deleted["deleted"] == 12
    assert api.get("/incremental/providers/services/checkpoints")["items"] == []

    api.cycle()
    cleaned = api.post("/incremental/cleanup")
    assert cleaned["deleted"] == 12
    assert "12 checkpoints" in cleaned["message"]


def test_errors_are_newest_first_and_paginated(api: Api) -> None:
    api.source.invalid = {3, 7, 11, 20, 33}
    api.cycle()
    start_step(api, "broken")

    first = api.get("/incremental/providers/services/errors", limit=2)
    ids = [e["id"] for e in first["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 2
    second = api.get("/incremental/providers/services/errors", limit=2, before=first["next_before"])
    third = api.get("/incremental/providers/services/errors", limit=2, before=second["next_before"])
    assert third["next_before"] is None
    items = first["items"] + second["items"] + third["items"]
    assert len(items) == 5
    assert {e["kind"] for e in items} == {"entity"}
    assert all("bad name" in e["message"] for e in items)
    assert all(e["rule"] for e in items)
    assert api.get("/incremental/providers/services/errors", kind="burst")["items"] == []

    burst = api.get("/incremental/providers/broken/errors", kind="burst")["items"]
    assert len(burst) == 1 and "404" in burst[0]["message"]


def test_cycles_bursts_and_error_rules_are_listed_newest_first(api: Api) -> None:
    api.source.invalid = {4, 9}
    api.cycle()
    api.source.invalid = set()
    api.source.drop(0.1)
    api.cycle()
    start_step(api, "broken")

    cycles = api.get("/incremental/providers/services/cycles")["items"]
    assert [c["status"] for c in cycles] == ["completed", "completed"]
    newest, oldest = cycles
    assert newest["id"] > oldest["id"]
    assert (oldest["rejected"], oldest["entities"], oldest["removed"]) == (2, 598, 0)
    assert newest["removed"] == 600 - len(api.source.refs())  # the 60 dropped
    assert newest["duration_seconds"] > 0
    assert api.get(f"/incremental/providers/services/cycles/{oldest['id']}") == oldest
    missing = api.request("GET", "/incremental/providers/broken/cycles/" + str(oldest["id"]))
    assert missing.status_code == 404
    assert "has no cycle" in missing.json()["error"]

    bursts = api.get("/incremental/providers/services/bursts", limit=1)["items"]
    assert [(b["cycle_id"], b["outcome"], b["pages"]) for b in bursts] == [
        (newest["id"], "done", 11)
    ]
    [failed] = api.get("/incremental/providers/broken/bursts")["items"]
    assert failed["outcome"] == "failed"
    assert "404" in failed["error"] and "\n" not in failed["error"]

    rules = api.get("/incremental/providers/services/error-rules")["rules"]
    assert sum(rules.values()) == 2
    [rule] = rules
    only = api.get("/incremental/providers/services/errors", rule=rule)["items"]
    assert len(only) == 2 and {e["rule"] for e in only} == {rule}
    assert api.get("/incremental/providers/services/errors", rule="no-such-rule")["items"] == []


# -- catalog -------------------------------------------------------------------------------


def test_entities_page_by_keyset_and_read_one_by_ref(api: Api) -> None:
    api.cycle()
    refs: list[str] = []
    after = None
    pages = 0
    while True:
        params: dict[str, Any] = {"provider": "services", "limit": 250}
        if after:
            params["after"] = after
        page = api.get("/entities", **params)
        refs += [e["ref"] for e in page["items"]]
        pages += 1
        after = page["next_after"]
        if after is None:
            break
    assert pages == 3
    assert refs == sorted(api.source.refs())
    assert len(api.get("/entities", kind="Component", limit=1000)["items"]) == 600
    assert api.get("/entities", kind="api")["items"] == []

    ref = "Component:default/Service-0000042"
    entity = api.get(f"/entities/{ref}")
    assert entity["ref"] == ref.lower()
    assert entity["provider"] == "services"
    assert entity["entity"]["metadata"]["name"] == "service-0000042"
    assert entity["mark_cycle"] == api.ingestion.store.cycles("services")[0]["id"]
    missing = api.request("GET", "/entities/component:default/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "no entity 'component:default/nope' in the catalog"


def test_entities_are_searched_by_a_fragment_of_the_ref(api: Api) -> None:
    api.cycle()
    found = api.get("/entities", q="Service-00001", limit=60)
    refs = [e["ref"] for e in found["items"]]
    assert refs == [f"component:default/service-{n:07d}" for n in range(100, 160)]
    rest = api.get("/entities", q="service-00001", limit=60, after=found["next_after"])
    assert len(rest["items"]) == 40 and rest["next_after"] is None
    assert api.get("/entities", q="%")["items"] == []  # a fragment, not a LIKE pattern
    assert api.get("/entities", q="0000042", kind="component")["items"][0]["ref"] == (
        "component:default/service-0000042"
    )


def test_invalid_parameters_get_a_readable_error(api: Api) -> None:
    response = api.request("GET", "/entities", limit=0)
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request: query limit:")
    bad_kind = api.request("GET", "/incremental/providers/services/errors", kind="nonsense")
    assert bad_kind.status_code == 422
    assert "kind" in bad_kind.json()["error"]


# -- metrics -------------------------------------------------------------------------------


def scrape(
    api: Api, token: str = METRICS_TOKEN
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.request("GET", "/metrics", token=token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_count_what_the_bursts_committed_per_provider(api: Api) -> None:
    api.source.invalid = {1, 2, 3}
    first = api.cycle()
    api.source.invalid = set()
    api.source.drop(0.1)
    api.source.version = 1  # every entity changes
    second = api.cycle()
    api.cycle()  # nothing changes
    start_step(api, "broken")

    s = scrape(api)
    services = {"provider": "services"}
    bursts = len(first) + len(second) + 1
    assert value(s, "ingestion_bursts_started_total", **services) == bursts
    assert value(s, "ingestion_bursts_completed_total", **services) == bursts
    assert value(s, "ingestion_bursts_failed_total", **services) == 0
    assert value(s, "ingestion_bursts_failed_total", provider="broken") == 1
    assert value(s, "ingestion_bursts_started_total", provider="broken") == 1
    remaining = len(api.source.refs())
    assert value(s, "ingestion_pages_total", **services) == 12 + 11 + 11
    assert value(s, "ingestion_entities_committed_total", **services) == 597 + remaining
    assert value(s, "ingestion_entities_unchanged_total", **services) == remaining
    assert value(s, "ingestion_entities_rejected_total", **services) == 3
    # The first cycle committed 597; the second saw 1 and 2 again and not the 59 others dropped.
    assert value(s, "ingestion_entities_removed_total", **services) == 597 - (remaining - 2)
    assert value(s, "ingestion_burst_duration_seconds_count", **services) == bursts
    assert value(s, "ingestion_burst_duration_seconds_sum", **services) > 0
    assert value(s, "ingestion_burst_duration_seconds_bucket", le="+Inf", **services) == bursts
    assert value(s, "ingestion_cycle_duration_seconds_count", **services) == 3
    assert value(s, "ingestion_cycle_duration_seconds_bucket", le="60.0", **services) == 3
    assert value(s, "ingestion_provider_attempts", provider="broken") == 1
    assert value(s, "ingestion_provider_running", **services) == 0
    # The admin token reads the same figures.
    assert scrape(api, TOKEN)[("ingestion_pages_total", (("provider", "services"),))] == 34


def test_metrics_show_when_the_current_cycle_last_failed_until_a_new_cycle_opens(
    api: Api,
) -> None:
    last_error = "ingestion_provider_last_error_timestamp_seconds"
    # Given a cycle whose first burst fails: the source answers 500 to every request
    api.source.fail_requests = 1_000
    failed = start_step(api, "services")
    assert failed.outcome == "failed" and failed.next is not None
    at = api.ingestion.store.status("services").last_error_at
    assert at is not None
    # Then the metrics say when, as the status does
    assert value(scrape(api), last_error, provider="services") == pytest.approx(at.timestamp())

    # When the source recovers and the same cycle goes on to its end
    api.source.fail_requests = 0
    step = failed.next
    while step is not None and step.cycle_id == failed.cycle_id:
        time.sleep(step.countdown)
        report = api.ingestion.engine.run_step("services", step.ticket, OWNER)
        step = None if report.outcome == "done" else report.next
    assert api.ingestion.store.cycles("services", limit=1)[0]["status"] == "completed"
    # Then its rest still shows the error of the cycle that just ended
    assert value(scrape(api), last_error, provider="services") == pytest.approx(at.timestamp())

    # When a new cycle runs without an error
    api.cycle()
    # Then the series is 0 again
    assert value(scrape(api), last_error, provider="services") == 0


# -- failures ------------------------------------------------------------------------------


def test_an_unreachable_database_gets_a_503_with_a_message(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql+psycopg2://postgres@127.0.0.1:1/nowhere",
        broker_url=EMBEDDED_BROKER,
        broker_dir=tmp_path / "broker",
    )
    ingestion = build(settings, [{"name": "services", "url": "http://127.0.0.1:1"}])
    with serve(create_api(ingestion, admin_token=TOKEN)) as url:
        health = httpx.get(url + "/incremental/health", timeout=30)
        providers = httpx.get(
            url + "/incremental/providers",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
    assert health.status_code == 503
    assert health.json()["healthy"] is False
    assert "INGESTION_DATABASE_URL" in health.json()["error"]
    assert providers.status_code == 503
    assert "the database could not answer" in providers.json()["error"]
