"""The brokers the worker tests run on, Redis and RabbitMQ: looking into a queue, and cleaning up.

Each test's workers use a queue of their own (and, on RabbitMQ, an exchange of the same name,
Celery's default), so a test removes exactly what it made.
"""

from __future__ import annotations

import redis
from kombu import Connection


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))


def queue_length(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (RabbitMQ: not counting those a consumer holds)."""
    if is_amqp(url):
        with Connection(url, connect_timeout=5) as conn:
            _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
            return int(count)
    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


def purge(url: str, queue: str) -> None:
    """Drop every ready message of ``queue``."""
    if is_amqp(url):
        with Connection(url, connect_timeout=5) as conn:
            conn.default_channel.queue_purge(queue)
        return
    client = redis.Redis.from_url(url)
    try:
        client.delete(queue)
    finally:
        client.close()


def remove_queue(url: str, queue: str) -> None:
    """Delete ``queue``: its Redis keys, or its RabbitMQ queue and exchange."""
    if is_amqp(url):
        with Connection(url, connect_timeout=5) as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
        return
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
