"""RabbitMQ's consumer timeout, met for real: a node of the test's own with a timeout of seconds.

RabbitMQ closes the channel of a consumer that holds a delivered message unacknowledged longer
than ``consumer_timeout`` (30 min by default), with ``PRECONDITION_FAILED``. A Celery worker holds
a countdown's message so until it is due. The engine therefore sends no countdown longer than
``max_countdown`` and leaves later steps to the reconciler. The shared RabbitMQ keeps its
default timeout, so these tests start a throwaway node whose timeout is 4 s, checked every
second, and wait there through a rest three times as long.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Message, Queue

from ingestion import Action, IncrementalIngestion
from ingestion.store import ProviderStatus
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.ingestions import client_ingestion, completed_cycles, wait_for_completed
from tests.support.paths import unique
from tests.support.rabbitmq import ThrowawayRabbitMQ
from tests.support.waiting import wait_until
from tests.support.workers import Workers

pytestmark = pytest.mark.workers

CONSUMER_TIMEOUT = 4.0  # seconds; the node checks it every CHANNEL_TICK
CHANNEL_TICK = 1.0
REST = 12.0  # three consumer timeouts

#: What a worker's log shows when RabbitMQ closes its channel for a held message.
CHANNEL_CLOSED = ("PRECONDITION_FAILED", "delivery acknowledgement", "Connection to broker lost")
#: What the node's log shows then.
NODE_TIMED_OUT = "timed out waiting for delivery acknowledgement"


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayRabbitMQ]:
    node = ThrowawayRabbitMQ(
        tmp_path_factory.mktemp("rabbitmq"),
        {
            "consumer_timeout": int(CONSUMER_TIMEOUT * 1000),
            "channel_tick_interval": int(CHANNEL_TICK * 1000),
        },
    )
    node.start()
    try:
        yield node
    finally:
        node.stop()


def provider_spec(server: SourceServer, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "burst_length": 0.1,
        "burst_interval": 1.0,  # bursts of a cycle: countdowns of 1 s, under any cap here
        "rest_length": REST,
        "backoff": [0.5, 0.5, 0.5],
    }
    defaults.update(options)
    return {"name": "services", "url": server.url, "per_page": 25, "options": defaults}


@pytest.mark.timeout(60)
def test_the_node_closes_the_channel_of_a_consumer_holding_a_message_past_the_timeout(
    rabbitmq: ThrowawayRabbitMQ,
) -> None:
    """The premise of the tests below: the node's settings take effect, and a plain consumer
    that never acknowledges loses its channel about a timeout plus a tick after delivery."""
    assert rabbitmq.setting("consumer_timeout") == "{ok,4000}"
    assert rabbitmq.setting("channel_tick_interval") == "{ok,1000}"
    name = unique("held")
    queue = Queue(name, durable=False, auto_delete=True)
    delivered: list[float] = []

    def hold(body: Any, message: Message) -> None:
        delivered.append(time.monotonic())  # and never acknowledged

    with Connection(rabbitmq.url(), connect_timeout=5) as conn:
        conn.Producer().publish({"held": True}, routing_key=name, declare=[queue])
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with conn.Consumer(queue, channel=channel, callbacks=[hold], accept=["json"]):
            deadline = time.monotonic() + 30
            with pytest.raises(PreconditionFailed, match="delivery acknowledgement"):
                while time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:  # socket.timeout: nothing delivered in 0.5 s
                        continue
            closed = time.monotonic()
    assert delivered, "the message was delivered"
    held = closed - delivered[0]
    # The broker's clock started a moment before this client saw the delivery.
    assert CONSUMER_TIMEOUT - 0.5 <= held <= CONSUMER_TIMEOUT + CHANNEL_TICK + 3, held
    wait_until(lambda: NODE_TIMED_OUT in rabbitmq.log(), timeout=10, what="the node's log")


def symptoms(text: str) -> list[str]:
    return [s for s in CHANNEL_CLOSED if s in text]


def first_cycle_then_rest(
    pg_url: str,
    rabbitmq: ThrowawayRabbitMQ,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
    max_countdown: float,
) -> tuple[Workers, subprocess.Popen[bytes], IncrementalIngestion, ProviderStatus]:
    """A worker and beat on the node, and a provider that completed a cycle and now rests."""
    source.count, source.delay = 150, 0.02  # 6 pages, in 2 or 3 bursts
    spec = provider_spec(source_server)
    workers = workers_factory(pg_url, rabbitmq.url(), [spec], max_countdown=max_countdown)
    worker = workers.start("w1")
    workers.start_beat()
    client = client_ingestion(workers)
    wait_for_completed(client, 1)
    rest = client.store.status("services")
    assert rest.action is Action.REST
    return workers, worker, client, rest


@pytest.mark.timeout(150)
def test_a_rest_three_times_the_consumer_timeout_keeps_the_channel_open_and_runs_once(
    pg_url: str,
    rabbitmq: ThrowawayRabbitMQ,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    # Given a countdown cap (2 s) under the node's consumer timeout (4 s), and a rest of 12 s
    node_log_from = len(rabbitmq.log())
    workers, worker, client, rest = first_cycle_then_rest(
        pg_url, rabbitmq, source, source_server, workers_factory, max_countdown=2
    )
    assert completed_cycles(client)[0]["bursts"] >= 2, "bursts sent as countdowns under the cap"
    channels = rabbitmq.consumer_channels(workers.queue)
    assert len(channels) == 1, channels

    # When the source changes during the rest, and the rest ends
    source.drop(0.10)
    source.grow(0.05)
    wait_for_completed(client, 2, timeout=60)

    # Then the worker waited the whole rest on the channel it had before, never closed ...
    second, first = completed_cycles(client)[:2]
    rested = (second["started_at"] - first["ended_at"]).total_seconds()
    assert rested >= REST - 0.5, rested
    assert worker.poll() is None, "the worker is alive"
    assert rabbitmq.consumer_channels(workers.queue) == channels
    assert not symptoms(workers.logs())
    assert NODE_TIMED_OUT not in rabbitmq.log()[node_log_from:]
    # ... the reconciler announced the end of the rest, and the next cycle ran it once
    assert "reconciler: announcing services" in workers.logs()
    ran = [b for b in client.store.bursts("services") if b["ticket"] == rest.ticket]
    assert len(ran) == 1, ran
    assert f"skipped services ticket {rest.ticket}:" not in workers.logs()
    assert second["removed"] == 15
    assert set(client.catalog.refs("services")) == source.refs()


@pytest.mark.timeout(120)
def test_control_a_cap_above_the_consumer_timeout_gets_the_channel_closed_and_the_worker_reconnects(
    pg_url: str,
    rabbitmq: ThrowawayRabbitMQ,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    """The test above can fail: with a cap of 60 s the 12 s rest is sent as a countdown, which
    the worker holds unacknowledged past the consumer timeout, and the node closes its channel.
    The worker does not die of it (``broker_channel_error_retry``): it reconnects, the message
    comes back, and the rest's step still runs once."""
    node_log_from = len(rabbitmq.log())
    workers, worker, client, rest = first_cycle_then_rest(
        pg_url, rabbitmq, source, source_server, workers_factory, max_countdown=60
    )

    wait_until(
        lambda: symptoms(workers.logs()),
        timeout=2 * (CONSUMER_TIMEOUT + CHANNEL_TICK) + 5,
        what="the worker's channel closed by the consumer timeout",
    )
    wait_until(
        lambda: NODE_TIMED_OUT in rabbitmq.log()[node_log_from:],
        timeout=10,
        what="the node's log",
    )
    wait_for_completed(client, 2, timeout=60)
    logs = workers.logs()
    assert "PRECONDITION_FAILED - delivery acknowledgement on channel" in logs
    assert "Unrecoverable error" not in logs
    assert worker.poll() is None, "the worker lived through the closed channel"
    ran = [b for b in client.store.bursts("services") if b["ticket"] == rest.ticket]
    assert len(ran) == 1, ran
    assert set(client.catalog.refs("services")) == source.refs()
