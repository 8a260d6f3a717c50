"""The ``ingestion`` command, run as a subprocess against a real database and source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from ingestion import Settings
from ingestion.store import Store
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.paths import ROOT, unique
from tests.support.processes import Service, free_port, http_ready, ingestion_cli

TOKEN = "cli-admin-token-0123456789abcdef"
FAST = {"burst_length": 60, "burst_interval": 0, "rest_length": 3600, "backoff": [0.05]}


class Cli:
    """Runs ``ingestion --app tests.support.synthetic_app ...`` with a test environment."""

    def __init__(self, env: dict[str, str], database_url: str, tmp_path: Path) -> None:
        self.env = env
        self.database_url = database_url
        self.tmp_path = tmp_path

    def __call__(self, *args: str, code: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ingestion_cli(*args),
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def store(self) -> Store:
        return Store(self.database_url)


def cli_env(database_url: str, tmp_path: Path, providers: list[dict[str, Any]]) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("INGESTION_ADMIN_TOKEN", "INGESTION_METRICS_TOKEN", "CELERY_BROKER_URL"):
        env.pop(name, None)
    env.update(
        {
            "INGESTION_APP": "tests.support.synthetic_app",
            "INGESTION_DATABASE_URL": database_url,
            "INGESTION_BROKER_DIR": str(tmp_path / "broker"),
            "TEST_PROVIDERS": json.dumps(providers),
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",
        }
    )
    return env


@pytest.fixture
def cli(tmp_path: Path, source_server: SourceServer) -> Cli:
    """The command on a migrated SQLite database, with ``services`` and ``broken`` (404)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store(url)
    store.migrate()
    store.dispose()
    providers = [
        {"name": "services", "url": source_server.url, "per_page": 50, "options": FAST},
        {"name": "broken", "url": source_server.url + "/missing", "options": FAST},
    ]
    return Cli(cli_env(url, tmp_path, providers), url, tmp_path)


def near_now(stamp: str, within: float = 30.0) -> bool:
    return abs((datetime.fromisoformat(stamp) - datetime.now(UTC)).total_seconds()) < within


def test_migrate_creates_the_schema_and_never_prints_the_password(
    pg_url: str, tmp_path: Path
) -> None:
    # Given a new Postgres database, addressed with a password (trust auth ignores it)
    name = f"{make_url(pg_url).database}_cli"
    admin = Store(pg_url)
    from sqlalchemy import create_engine, text

    server = create_engine(make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(pg_url).set(database=name, password="s3cret-password")
    rendered = url.render_as_string(hide_password=False)
    try:
        run = Cli(cli_env(rendered, tmp_path, []), rendered, tmp_path)
        done = run("migrate")
        assert "latest schema" in done.stdout
        assert "s3cret-password" not in done.stdout + done.stderr
        assert "***" in done.stdout
        store = run.store()
        assert store.provider_names() == []  # the tables exist
        store.dispose()
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def test_migrate_on_a_database_no_one_created_says_to_create_it(
    pg_url: str, tmp_path: Path
) -> None:
    url = make_url(pg_url).set(database=unique("never_created"), password="s3cret-password")
    rendered = url.render_as_string(hide_password=False)
    done = Cli(cli_env(rendered, tmp_path, []), rendered, tmp_path)("migrate", code=1)
    assert "does not exist" in done.stderr and "createdb" in done.stderr
    assert "Traceback" not in done.stderr
    assert "s3cret-password" not in done.stdout + done.stderr


def test_run_runs_one_cycle_in_the_foreground_with_progress(cli: Cli) -> None:
    done = cli("run", "services")
    assert "services: cycle 1 completed" in done.stdout
    assert "600" in done.stdout
    assert "12 pages" in done.stderr and "600 entities" in done.stderr
    store = cli.store()
    assert store.count_entities("services") == 600
    store.dispose()


def test_run_exits_non_zero_when_the_cycle_fails(cli: Cli) -> None:
    done = cli("run", "broken", code=1)
    assert "error: provider 'broken': the cycle did not complete" in done.stderr
    assert "404" in done.stderr
    assert "Traceback" not in done.stderr


def test_providers_and_status_show_where_each_provider_stands(cli: Cli) -> None:
    cli("run", "services")

    table = cli("providers").stdout
    assert "services" in table and "broken" in table
    assert "rest" in table and "ingest" not in table
    listed = cli.json("providers")
    assert [p["name"] for p in listed] == ["broken", "services"]
    assert listed[1]["entities"] == 600

    detail = cli.json("status", "services")
    assert detail["last_completed_cycle"]["entities"] == 600
    assert detail["action"] == "rest"
    text = cli("status", "services").stdout
    assert "last completed" in text and "600 entities, 0 removed" in text
    everything = cli("status").stdout
    assert "provider services" in everything and "provider broken" in everything

    missing = cli("status", "nope", code=1)
    assert "error: no provider named 'nope' is registered (known: broken, services)" in (
        missing.stderr
    )


def test_trigger_start_and_cancel_steer_the_provider(cli: Cli) -> None:
    cli("run", "services")
    assert not near_now(cli.json("status", "services")["due_at"], within=600)

    assert "the pending step is due now" in cli("trigger", "services").stdout
    assert near_now(cli.json("status", "services")["due_at"])

    assert "a new cycle begins now" in cli("start", "services").stdout
    opened = cli.json("status", "services")
    assert opened["action"] == "ingest"
    cycle = opened["current_cycle"]["id"]

    assert "cancelled" in cli("cancel", "services").stdout
    cancelled = cli.json("status", "services")
    assert cancelled["action"] == "rest"
    assert cancelled["current_cycle"] is None
    store = cli.store()
    assert {c["id"]: c["status"] for c in store.cycles("services")}[cycle] == "cancelled"
    store.dispose()
    for command in ("trigger", "start", "cancel"):
        assert "no provider named 'nope'" in cli(command, "nope", code=1).stderr


def test_reset_asks_first_then_purges_the_records_and_keeps_the_entities(cli: Cli) -> None:
    cli("run", "services")
    store = cli.store()
    refused = cli("reset", "services", code=1)
    assert "Purge the cycles, page checkpoints, bursts and errors of 'services'" in refused.stdout
    assert "not confirmed" in refused.stderr
    assert store.cycles("services")  # nothing purged
    assert "records purged" in cli("reset", "services", "--yes").stdout
    assert store.cycles("services") == []
    assert store.count_entities("services") == 600
    store.dispose()


def test_checkpoints_and_errors(cli: Cli, source_server: SourceServer) -> None:
    source_server.source.invalid = {2}
    cli("run", "services")

    marks = cli.json("checkpoints", "services", "--limit", "100")
    assert [m["sequence"] for m in marks] == list(range(12, 0, -1))
    assert "cycle" in cli("checkpoints", "services").stdout
    assert "deleted 12 checkpoints" in cli("checkpoints", "services", "--delete").stdout
    assert cli.json("marks", "services") == []  # the name Backstage uses

    errors = cli.json("errors", "services")
    assert len(errors) == 1
    assert errors[0]["kind"] == "entity" and "bad name 2" in errors[0]["message"]
    assert "bad name 2" in cli("errors", "services").stdout
    assert cli.json("errors", "services", "--kind", "burst") == []

    cli("run", "services")
    assert "deleted 12 checkpoints of closed cycles" in cli("cleanup").stdout


def test_entities_pages_through_the_catalog_and_shows_one(
    cli: Cli, source_server: SourceServer
) -> None:
    source_server.source.invalid = {2}
    cli("run", "services")
    page = cli("entities", "--limit", "5").stdout
    assert "component:default/service-0000000" in page
    assert "next page: --after component:default/service-0000005" in page
    everything = cli.json("entities", "--provider", "services", "--limit", "1000")
    assert len(everything) == 599
    after = cli.json("entities", "--after", "component:default/service-0000597")
    assert [e["ref"] for e in after] == [
        "component:default/service-0000598",
        "component:default/service-0000599",
    ]
    one = cli.json("entities", "component:default/service-0000007")
    assert one["entity"]["metadata"]["name"] == "service-0000007"
    assert "no entity" in cli("entities", "component:default/nope", code=1).stderr


def test_api_refuses_to_start_without_a_token_and_serves_with_one(cli: Cli) -> None:
    refused = cli("api", code=2)
    assert "INGESTION_ADMIN_TOKEN" in refused.stderr and "--insecure" in refused.stderr
    port = free_port()
    service = Service(
        "api",
        ingestion_cli("api", "--port", str(port)),
        {**cli.env, "INGESTION_ADMIN_TOKEN": TOKEN},
        cli.tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        service.wait_ready(http_ready(url + "/incremental/health"))
        assert httpx.get(url + "/incremental/providers", timeout=10).status_code == 401
        authorized = httpx.get(
            url + "/incremental/providers",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert authorized.status_code == 200
        assert [p["name"] for p in authorized.json()] == ["broken", "services"]
    finally:
        service.stop()
    assert "Application shutdown complete" in service.log()  # SIGTERM shuts it down cleanly
    assert "GET /incremental/providers" in service.log()
    assert TOKEN not in service.log()


def test_api_insecure_flag_serves_without_a_token(cli: Cli) -> None:
    port = free_port()
    service = Service(
        "api-insecure",
        ingestion_cli("api", "--insecure", "--port", str(port)),
        cli.env,
        cli.tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        service.wait_ready(http_ready(url + "/incremental/health"))
        assert httpx.get(url + "/incremental/providers", timeout=10).status_code == 200
    finally:
        service.stop()
    assert "WITHOUT a token" in service.log()


def test_a_missing_app_or_database_is_a_clear_error(cli: Cli) -> None:
    env = {k: v for k, v in cli.env.items() if k != "INGESTION_APP"}
    done = subprocess.run(
        ingestion_cli("providers"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "no app given: pass --app" in done.stderr
    wrong = cli("--app", "no_such_module", "providers", code=2)
    assert "cannot import the app module 'no_such_module'" in wrong.stderr
    down = cli(
        "providers",
        code=1,
        INGESTION_DATABASE_URL="postgresql+psycopg2://postgres:pw-not-shown@127.0.0.1:1/nowhere",
    )
    assert "the database could not answer" in down.stderr
    assert "pw-not-shown" not in down.stderr
    assert "Traceback" not in down.stderr


@pytest.fixture
def guarded(tmp_path: Path, source: SyntheticSource, source_server: SourceServer) -> Cli:
    """A provider whose guard holds removals until approved, and a catalog it ingested."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store(url)
    store.migrate()
    store.dispose()
    options = {
        **FAST,
        "reject_removals_above_percentage": 10,
        "hold_removals_until_approved": True,
    }
    providers = [{"name": "services", "url": source_server.url, "per_page": 50, "options": options}]
    cli = Cli(cli_env(url, tmp_path, providers), url, tmp_path)
    cli("run", "services")
    source.drop(0.5)  # half the source goes: above the guard's 10%
    cli("run", "services")
    return cli


@pytest.mark.timeout(120)
def test_held_removals_are_listed_and_approved(guarded: Cli, source: SyntheticSource) -> None:
    held = guarded.json("held", "services", "--limit", "1000")
    assert len(held) == 300
    status = guarded.json("status", "services")
    assert status["blocked_sweep"]["held_until_approved"] is True
    assert "300 removals held back" in guarded("status", "services").stdout
    assert "300 held-back entities removed" in guarded("held", "services", "--approve").stdout
    assert guarded.json("status", "services")["blocked_sweep"] is None
    assert guarded.json("held", "services") == []
    assert "provider 'services': no removal is held back" in guarded("held", "services").stdout
    assert "no entity waits for removal" in guarded("waiting", "services").stdout
    assert guarded.json("status", "services")["entities"] == len(source.refs())


@pytest.mark.timeout(120)
def test_held_removals_are_dismissed(guarded: Cli) -> None:
    assert "300 held-back entities kept" in guarded("held", "services", "--dismiss").stdout
    status = guarded.json("status", "services")
    assert status["blocked_sweep"] is None and status["entities"] == 600
    assert "not both" in guarded("held", "services", "--approve", "--dismiss", code=2).stderr


def test_changes_prints_the_feed_as_json_lines_after_an_id(cli: Cli) -> None:
    cli("run", "services")
    lines = cli("changes", "--limit", "70").stdout.splitlines()
    changes = [json.loads(line) for line in lines]
    assert len(changes) == 600
    assert {c["kind"] for c in changes} == {"added"} and changes[0]["source"] == "page"
    assert changes[0]["entity"]["metadata"]["name"] == "service-0000000"
    assert [c["id"] for c in changes] == sorted(c["id"] for c in changes)
    rest = cli("changes", "--after", str(changes[589]["id"])).stdout.splitlines()
    assert [json.loads(line)["id"] for line in rest] == [c["id"] for c in changes[590:]]


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.timeout(90)
def test_changes_follow_prints_changes_as_they_commit(cli: Cli, source: SyntheticSource) -> None:
    cli("run", "services")
    last = json.loads(cli("changes").stdout.splitlines()[-1])["id"]
    follower = subprocess.Popen(
        ingestion_cli("changes", "--follow", "--after", str(last), "--interval", "0.1"),
        cwd=ROOT,
        env={**cli.env, "PYTHONFAULTHANDLER": "1"},  # a stack on SIGABRT, should it hang
        # Ctrl-C as a terminal gives it: a runner started in the background by a script
        # ignores SIGINT, its children inherit that, and Python then installs no handler.
        preexec_fn=_sigint_as_in_a_terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A cycle after the source changed: 60 services gone, every other one changed
        source.drop(0.1)
        source.version = 2
        cli("run", "services")
        assert follower.stdout is not None
        followed = [json.loads(follower.stdout.readline()) for _ in range(600)]
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            _, err = follower.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            follower.send_signal(signal.SIGABRT)  # faulthandler prints where it was
            _, err = follower.communicate(timeout=30)
            pytest.fail(f"--follow did not stop on SIGINT within 30 s:\n{err}")
    assert follower.returncode == 0, err
    assert "following the change feed" in err
    kinds = [c["kind"] for c in followed]
    assert kinds.count("changed") == 540 and kinds.count("removed") == 60
    assert all(c["id"] > last for c in followed)


def test_events_lists_what_sources_sent_and_shows_one_in_full(
    cli: Cli, source_server: SourceServer
) -> None:
    cli("run", "services")
    from providers.synthetic import synthetic_event
    from tests.support.synthetic_app import build

    ingestion = build(
        Settings(database_url=cli.database_url, broker_dir=cli.tmp_path / "broker"),
        [{"name": "services", "url": source_server.url, "per_page": 50, "options": FAST}],
    )
    accepted = ingestion.accept_event(
        "synthetic", synthetic_event(source_server.url, removed=[4]), delivery_id="cli-1"
    )
    ingestion.apply_events("test/1")
    ingestion.close()

    listed = cli("events").stdout
    assert "cli-1" in listed and "applied" in listed and "removed 1" in listed
    shown = json.loads(cli("events", str(accepted.id)).stdout)
    assert shown["payload"]["removed"] == [4] and shown["status"] == "applied"
    assert "no event 424242" in cli("events", "424242", code=1).stderr
