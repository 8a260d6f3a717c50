"""The reconciler at many providers: a bounded number of statements per tick, a queue of its
own, announcements bounded by the burst queue's depth, and the overdue providers counted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from ingestion import (
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    IncrementalIngestion,
)
from ingestion.metrics import registry_for, render
from ingestion.settings import Settings, celery_config
from ingestion.tasks import BURST, CANCEL, RECONCILE, RESET, START, TRIGGER
from tests.support.ingestions import make_ingestion


class Empty(IncrementalEntityProvider[None, None]):
    def __init__(self, name: str) -> None:
        self.name = name

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[None], Any]) -> None:
        burst(None)

    def next(self, context: None, cursor: None = None) -> EntityIteratorResult[None]:
        return EntityIteratorResult(done=True, entities=list[DeferredEntity]())


def many(database_url: str, tmp_path: Path, count: int, **settings: Any) -> IncrementalIngestion:
    # History kept: the statements counted are those of scheduling (and of waiting events)
    settings = {"changes_retention": 0, "events_retention": 0, **settings}
    ingestion = make_ingestion(database_url, tmp_path, resend_after=0, **settings)
    for i in range(count):
        ingestion.add_provider(Empty(f"p-{i:05d}"))
    return ingestion


@contextmanager
def statements(ingestion: IncrementalIngestion) -> Iterator[list[tuple[str, Any]]]:
    """Every statement (and its parameters) sent to the database inside the block."""
    seen: list[tuple[str, Any]] = []
    engine = ingestion.store.db.sql_engine

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def parameter_count(parameters: Any) -> int:
    if isinstance(parameters, dict):
        return sum(len(v) if isinstance(v, list | tuple) else 1 for v in parameters.values())
    return len(parameters or ())


def due_in(ingestion: IncrementalIngestion, interval: str) -> None:
    future = "datetime('now', '+1 day')" if ingestion.store.dialect == "sqlite" else interval
    with ingestion.store.db.sql_engine.begin() as conn:
        conn.execute(text(f"UPDATE ingestion_providers SET due_at = {future}"))


@pytest.mark.timeout(120)
def test_a_tick_at_many_providers_sends_a_few_statements_and_no_list_of_names(
    database_url: str, tmp_path: Path
) -> None:
    # Given 2,000 registered providers, none due
    ingestion = many(database_url, tmp_path, 2000)
    assert len(ingestion.register_providers()) == 2000
    due_in(ingestion, "now() + interval '1 day'")
    # When the reconciler ticks
    with statements(ingestion) as idle:
        assert ingestion.reconcile() == []
    # Then it registers nobody again, and reads the due steps (and whether events wait)
    # without naming the providers
    assert len(idle) <= 6, [s for s, _ in idle]
    assert not any("INSERT" in s.upper() for s, _ in idle)
    assert all(parameter_count(p) < 20 for _, p in idle)
    ingestion.store.dispose()


@pytest.mark.timeout(120)
def test_a_tick_announcing_hundreds_needs_no_statement_per_provider(
    database_url: str, tmp_path: Path
) -> None:
    # Given 300 providers registered just now: every first cycle is due
    ingestion = many(database_url, tmp_path, 300)
    ingestion.register_providers()
    # When the reconciler ticks
    with statements(ingestion) as seen:
        due = ingestion.reconcile()
    # Then it announces all of them with a few statements (no query per provider)
    assert sorted(d.provider for d in due) == sorted(ingestion.providers)
    assert all(d.burst == 1 and d.cycle_id is None for d in due)
    assert len(seen) <= 8, [s for s, _ in seen]  # two of them ask whether events wait
    # And announces nobody again while their messages wait in the queue
    assert ingestion.queue_depth() == 300
    assert ingestion.reconcile() == []
    ingestion.store.dispose()


@pytest.mark.timeout(120)
def test_the_reconciler_announces_a_bounded_number_a_tick_and_nothing_twice_while_queued(
    database_url: str, tmp_path: Path
) -> None:
    # Given 50 due providers and at most 20 announcements a tick
    ingestion = many(database_url, tmp_path, 50, max_announce=20)
    # When the reconciler ticks four times
    ticks = [ingestion.reconcile() for _ in range(4)]
    # Then it announced 20, 20, 10, each once, and nothing while their messages wait
    assert [len(t) for t in ticks] == [20, 20, 10, 0]
    assert len({d.provider for t in ticks for d in t}) == 50
    assert ingestion.queue_depth() == 50
    ingestion.store.dispose()


def test_the_reconciler_and_operator_tasks_have_a_queue_of_their_own(tmp_path: Path) -> None:
    settings = Settings(queue="ingest-x", broker_dir=tmp_path / "broker")
    ingestion = IncrementalIngestion(settings=settings)
    router = ingestion.celery_app.amqp.router

    def queue_of(task: str) -> str:
        return str(router.route({}, task)["queue"].name)

    assert queue_of(BURST) == "ingest-x"
    for task in (RECONCILE, TRIGGER, START, CANCEL, RESET):
        assert queue_of(task) == "ingest-x.control", task
    config = celery_config(settings)
    # A worker consumes both queues by default
    assert [q.name for q in config["task_queues"]] == ["ingest-x", "ingest-x.control"]
    # And beat sends the reconciler there, with no expiry a deep burst queue could reach
    entry = config["beat_schedule"]["ingestion-reconcile"]
    assert entry["options"]["queue"] == "ingest-x.control"
    assert entry["options"]["expires"] >= 10 * settings.reconcile_interval
    # And no task-sent event per message: Flower reads the worker's events
    assert config["task_send_sent_event"] is False
    assert ingestion.tasks[RECONCILE].send_events is False
    assert ingestion.tasks[BURST].send_events is True
    named = Settings(queue="q", control_queue="ops", broker_dir=tmp_path / "broker")
    assert [q.name for q in celery_config(named)["task_queues"]] == ["q", "ops"]


@pytest.mark.timeout(60)
def test_providers_overdue_by_more_than_a_reconcile_interval_are_counted(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = many(database_url, tmp_path, 3)
    ingestion.register_providers()
    past = (
        "datetime('now', '-1 hour')"
        if ingestion.store.dialect == "sqlite"
        else ("now() - interval '1 hour'")
    )
    with ingestion.store.db.sql_engine.begin() as conn:
        conn.execute(
            text(f"UPDATE ingestion_providers SET due_at = {past} WHERE name <> 'p-00002'")
        )
    metrics = render(registry_for(ingestion.store.db, overdue_after=5)).decode()
    assert "ingestion_providers_overdue 2.0" in metrics
    ingestion.store.dispose()
