"""Settings read from the environment, and the Celery configuration that follows from them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from kombu.entity import Queue
from pydantic import AliasChoices, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingestion import broker
from ingestion.durations import parse_duration

#: Used when neither INGESTION_BROKER_URL nor CELERY_BROKER_URL is set: a broker in plain files,
#: for one machine, with no server to run (see ingestion.broker).
EMBEDDED_BROKER = f"{broker.SCHEME}://"
#: URL schemes of RabbitMQ (kombu's py-amqp transport).
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def _retention(value: object) -> timedelta | None:
    duration = parse_duration(value)
    return duration if duration > timedelta(0) else None


#: A duration after which history is pruned; ``None`` (given as 0) keeps it.
Retention = Annotated[timedelta | None, BeforeValidator(_retention)]


class Settings(BaseSettings):
    """Engine settings; each field is read from ``INGESTION_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="INGESTION_", extra="ignore", populate_by_name=True
    )

    database_url: str = Field(
        "sqlite:///ingestion.db",
        description="SQLAlchemy URL of the state and catalog database (Postgres or SQLite).",
    )
    broker_url: str = Field(
        EMBEDDED_BROKER,
        validation_alias=AliasChoices("INGESTION_BROKER_URL", "CELERY_BROKER_URL"),
        description="Celery broker; the embedded file broker when unset.",
    )
    broker_dir: Path = Field(
        Path("ingestion-broker"), description="Folder of the embedded file broker."
    )
    queue: str = Field("ingestion", description="The queue of the bursts.")
    control_queue: str = Field(
        "",
        description="The queue of the reconciler and the operator tasks (trigger, start, "
        "cancel, reset), so that no backlog of bursts delays them; '<queue>.control' when "
        "empty. A worker consumes both unless told otherwise (celery worker -Q).",
    )
    max_announce: int = Field(
        1000,
        ge=1,
        description="The most due steps one reconciler tick announces (the least recently "
        "announced first); the rest wait for the next tick.",
    )
    reconcile_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between two runs of the reconciler (Celery beat): how soon a "
        "step whose message was lost, or whose worker died, is announced again.",
    )
    resend_after: float = Field(
        5.0,
        ge=0,
        description="A due step not claimed this many seconds after it was due (or last "
        "announced) is announced again by the reconciler.",
    )
    page_timeout: float = Field(
        60.0, gt=0, description="The most one call of next() may take before the burst fails."
    )
    lease_seconds: float = Field(
        10.0,
        gt=0,
        description="How long a burst holds its provider without renewing; a heartbeat renews "
        "it every third of that while the burst runs, so a dead worker's provider is taken "
        "over after at most this plus a reconciler period.",
    )
    time_limit_grace: float = Field(
        10.0,
        gt=0,
        description="Seconds between a burst's soft time limit and the hard one that kills it.",
    )
    max_countdown: float = Field(
        600.0,
        gt=0,
        description="Steps due later than this are left to the reconciler instead of a "
        "countdown; keep it well under Redis's visibility timeout and RabbitMQ's "
        "consumer_timeout.",
    )
    visibility_timeout: float = Field(
        3600.0, gt=0, description="The Redis broker's visibility timeout, in seconds."
    )
    auto_migrate: bool = Field(True, description="Migrate the schema when a worker starts.")
    changes_retention: Retention = Field(
        timedelta(days=7),
        description="How long the change feed keeps a change (a duration such as 7d, or "
        "seconds; 0 keeps every change). A consumer must read more often than this.",
    )
    events_retention: Retention = Field(
        timedelta(days=7),
        description="How long an applied event is kept, for inspection (0 keeps them all). "
        "Events not applied yet are never removed.",
    )
    changes_task: str | None = Field(
        None,
        description="A Celery task to send after each committed batch of changes, with the "
        "keyword arguments first, last, count and providers (ids of the feed): a push for "
        "consumers that do not poll. Unset: no task is sent.",
    )
    changes_task_queue: str | None = Field(
        None,
        description="The queue changes_task is sent to; '<queue>.changes' when unset (a queue "
        "the engine's workers do not consume: the consumer's workers do).",
    )


def changes_queue(settings: Settings) -> str:
    """The queue of the push task of the change feed."""
    return settings.changes_task_queue or f"{settings.queue}.changes"


def control_queue(settings: Settings) -> str:
    """The queue of the reconciler and the operator tasks."""
    return settings.control_queue or f"{settings.queue}.control"


#: The tasks that go to the control queue: short, idempotent, never behind a backlog of bursts.
CONTROL_TASKS = (
    "ingestion.reconcile",
    "ingestion.trigger",
    "ingestion.start",
    "ingestion.cancel",
    "ingestion.reset",
    "ingestion.event",
    "ingestion.apply_events",
)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings the engine's invariants call for."""
    control = control_queue(settings)
    routes: dict[str, Any] = {name: {"queue": control} for name in CONTROL_TASKS}
    routes["ingestion.*"] = {"queue": settings.queue}
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        # A burst is acknowledged when it has finished; a worker lost mid-burst requeues it.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Flower shows a task from the worker's events (received, started, succeeded); the
        # sender's task-sent event would be one more broker command for every burst.
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "task_default_queue": settings.queue,
        # A worker consumes both queues by default (celery worker -Q picks).
        "task_queues": [Queue(settings.queue), Queue(control)],  # type: ignore[no-untyped-call]
        "task_routes": routes,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "ingestion-reconcile": {
                "task": "ingestion.reconcile",
                "schedule": settings.reconcile_interval,
                # On a queue of its own a reconcile waits at most for a free pool process; the
                # expiry only keeps ticks from piling up while no worker runs (a late tick is
                # harmless: it announces what is due then).
                "options": {
                    "queue": control,
                    "expires": max(60.0, 10 * settings.reconcile_interval),
                },
            }
        },
    }
    if settings.broker_url.startswith(EMBEDDED_BROKER):
        folder = settings.broker_dir.resolve()
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "messages"),
            "data_folder_out": str(folder / "messages"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": True,
            "polling_interval": 0.05,
        }
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        config["broker_transport_options"] = {"visibility_timeout": settings.visibility_timeout}
    elif settings.broker_url.startswith(AMQP_SCHEMES):
        # Publisher confirms: a send returns once RabbitMQ has the message, and a refused one
        # raises, so the step is left to the reconciler instead of being lost in silence.
        # Countdowns stay under RabbitMQ's consumer_timeout (30 min by default), which closes
        # the channel of a worker holding an unacknowledged message longer, by max_countdown.
        config["broker_transport_options"] = {"confirm_publish": True}
        # Were the consumer timeout hit anyway (a burst held past it), RabbitMQ closes the
        # channel with PRECONDITION_FAILED; Celery takes that for unrecoverable and the worker
        # exits unless it may reconnect on a channel error. The message goes back to the queue
        # and the ticket guard makes its redelivery harmless.
        config["broker_channel_error_retry"] = True
    return config


def prepare_broker(settings: Settings) -> None:
    """Create the embedded broker's folders (a no-op for a broker server)."""
    if settings.broker_url.startswith(EMBEDDED_BROKER):
        for name in ("messages", "control", "processed"):
            (settings.broker_dir / name).mkdir(parents=True, exist_ok=True)
