"""Thin Celery tasks: each one calls the ingestion object and announces the next step."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.utils.log import get_task_logger

from ingestion.errors import DatabaseUnavailable
from ingestion.events import clean_headers, delivery_id_of

if TYPE_CHECKING:
    from ingestion.app import IncrementalIngestion

log = get_task_logger("ingestion.tasks")

BURST = "ingestion.burst"
RECONCILE = "ingestion.reconcile"
TRIGGER = "ingestion.trigger"
START = "ingestion.start"
CANCEL = "ingestion.cancel"
RESET = "ingestion.reset"
EVENT = "ingestion.event"
APPLY_EVENTS = "ingestion.apply_events"


def register_tasks(app: Celery, ingestion: IncrementalIngestion) -> dict[str, Task]:
    """Define the engine's tasks on ``app``, bound to ``ingestion``'s providers and store.

    The tasks are not shared with other Celery apps: each ``IncrementalIngestion`` in a process
    keeps its own providers, store and queue.
    """

    @app.task(name=BURST, bind=True, acks_late=True, shared=False)  # type: ignore[untyped-decorator]
    def burst(
        self: Task, provider: str, ticket: int, cycle: int | None = None, burst: int = 1
    ) -> dict[str, Any]:
        """Run one burst of ``provider`` for the step ``ticket`` (cycle and burst are labels)."""
        owner = _owner(self)
        report = ingestion.engine.run_step(provider, ticket, owner)
        ingestion.observe(report)
        if report.next is not None:
            ingestion.ring(report.next)
        return {
            "provider": provider,
            "cycle": report.cycle_id,
            "burst": report.burst,
            "outcome": report.outcome,
            "pages": report.pages,
            "entities": report.entities,
        }

    # No task events for the reconciler: every few seconds, and Flower has nothing to show.
    @app.task(name=RECONCILE, shared=False, send_events=False)  # type: ignore[untyped-decorator]
    def reconcile() -> int:
        """Announce every due step that no worker holds (lost messages, long rests)."""
        try:
            return len(ingestion.reconcile())
        except DatabaseUnavailable as exc:
            # The next tick tries again; a line, not a traceback, every few seconds.
            log.warning("reconciler: %s; the next tick tries again", exc)
            return 0

    @app.task(name=TRIGGER, shared=False)  # type: ignore[untyped-decorator]
    def trigger(provider: str) -> str:
        """Run the provider's pending step now."""
        return ingestion.trigger(provider).action.value

    @app.task(name=START, shared=False)  # type: ignore[untyped-decorator]
    def start(provider: str) -> str:
        """Cancel the provider's open cycle, if any, and begin a new one now."""
        return ingestion.start(provider).action.value

    @app.task(name=CANCEL, shared=False)  # type: ignore[untyped-decorator]
    def cancel(provider: str) -> str:
        """Cancel the provider's open cycle; it rests until started again."""
        return ingestion.cancel(provider).action.value

    @app.task(name=RESET, shared=False)  # type: ignore[untyped-decorator]
    def reset(provider: str) -> str:
        """Forget the provider's ingestion records and begin afresh."""
        return ingestion.reset(provider).action.value

    @app.task(name=EVENT, bind=True, acks_late=True, shared=False)  # type: ignore[untyped-decorator]
    def event(
        self: Task,
        topic: str,
        payload: Any,
        headers: dict[str, str] | None = None,
        delivery_id: str | None = None,
    ) -> dict[str, Any]:
        """Accept one event from the source (``celery call ingestion.event``) and apply the
        events waiting. The delivery id is ``delivery_id``, else one the headers carry
        (``X-GitHub-Delivery``, ...), else the task's id: a redelivered message is applied
        once."""
        kept = clean_headers(headers)
        accepted = ingestion.accept_event(
            topic,
            payload,
            headers=kept,
            delivery_id=delivery_id or delivery_id_of(kept) or self.request.id,
            announce=False,
        )
        applied = ingestion.apply_events(_owner(self))
        return {"id": accepted.id, "duplicate": accepted.duplicate, "applied": applied}

    @app.task(name=APPLY_EVENTS, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def apply_events(self: Task) -> int:
        """Apply the stored events not applied yet, in the order they were accepted."""
        return ingestion.apply_events(_owner(self))

    return {
        t.name: t for t in (burst, reconcile, trigger, start, cancel, reset, event, apply_events)
    }


def _owner(task: Task) -> str:
    return f"{task.request.hostname or 'worker'}/{os.getpid()}"
